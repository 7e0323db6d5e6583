package orders

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// openAPIDoc is the part of the document the checks read.
type openAPIDoc struct {
	OpenAPI string                               `yaml:"openapi"`
	Paths   map[string]map[string]map[string]any `yaml:"paths"`
}

func loadOpenAPI(t *testing.T) (openAPIDoc, map[string]any) {
	t.Helper()
	var doc openAPIDoc
	if err := yaml.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(OpenAPI(), &raw); err != nil {
		t.Fatal(err)
	}
	return doc, raw
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// documented returns "METHOD /path" for every operation in the document.
func (d openAPIDoc) documented() []string {
	var out []string
	for path, item := range d.Paths {
		for m := range item {
			if slices.Contains(httpMethods, m) {
				out = append(out, strings.ToUpper(m)+" "+path)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Every route the service registers is documented, and only those: the
// document is checked against the real mux, not against a copy of it.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc, raw := loadOpenAPI(t)
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi: %q, want 3.1.0", doc.OpenAPI)
	}
	svc, _ := newLiteService(t, Config{}, nil)
	routes := slices.Clone(svc.routes)
	sort.Strings(routes)
	if got, want := fmt.Sprint(doc.documented()), fmt.Sprint(routes); got != want {
		t.Fatalf("documented operations\n  %s\nregistered routes\n  %s", got, want)
	}
	// Every $ref points at something.
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "$ref" {
					if _, ok := lookup(raw, x.(string)); !ok {
						t.Errorf("%s: $ref %v resolves to nothing", at, x)
					}
					continue
				}
				walk(x, at+"/"+k)
			}
		case []any:
			for i, x := range v {
				walk(x, fmt.Sprintf("%s/%d", at, i))
			}
		}
	}
	walk(raw, "#")
}

// Every documented operation answers on the real service with something
// other than 404 or 405, and what is documented as a problem is one.
func TestOpenAPIRoutesAnswer(t *testing.T) {
	doc, _ := loadOpenAPI(t)
	w := newWorld(t, worldOptions{token: "tok"})
	o := w.place("openapi-key", teaForAlice)
	for _, op := range doc.documented() {
		method, path, _ := strings.Cut(op, " ")
		url := strings.NewReplacer("/orders/{id}", "/orders/"+o.OrderID, "/customers/{id}", "/customers/alice").Replace(path)
		if strings.Contains(url, "{") {
			t.Fatalf("%s: no sample value for its path parameter", op)
		}
		var body string
		headers := []string{"Content-Type", "application/json"}
		if method == http.MethodPost && path == "/orders" {
			body = `{"customer_id":"alice","lines":[{"product_id":"coffee","quantity":1}]}`
			headers = append(headers, "Idempotency-Key", "openapi-route")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		req, _ := http.NewRequestWithContext(ctx, method, w.srv.URL+url, strings.NewReader(body))
		for i := 0; i < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		// Event streams answer with their headers at once; closing the body
		// hangs up.
		res, err := w.srv.Client().Do(req)
		if err != nil {
			cancel()
			t.Fatalf("%s: %v", op, err)
		}
		res.Body.Close()
		cancel()
		if res.StatusCode == http.StatusNotFound || res.StatusCode == http.StatusMethodNotAllowed {
			t.Errorf("%s (%s): %d", op, url, res.StatusCode)
		}
		if _, ok := doc.Paths[path][strings.ToLower(method)]["responses"].(map[string]any)[fmt.Sprint(res.StatusCode)]; !ok {
			t.Errorf("%s answered %d, which the document does not list", op, res.StatusCode)
		}
	}
}
