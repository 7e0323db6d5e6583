package web

import (
	"embed"
	"net/http"
)

//go:embed static/index.html static/app.js static/style.css
var static embed.FS

// files maps each URL path the handler answers to its embedded file.
var files = map[string]string{
	"/":          "static/index.html",
	"/app.js":    "static/app.js",
	"/style.css": "static/style.css",
}

// Handler serves the demo page at / and its assets (/app.js, /style.css).
// Any other path is a 404, so the handler can be mounted at / beside the API
// routes. The page loads nothing from another origin, and its
// Content-Security-Policy says so.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// The embedded files change only with the binary; revalidating on
		// each load keeps a page from an older binary out of the cache.
		h.Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, static, name)
	})
}
