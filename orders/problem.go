package orders

import (
	"encoding/json"
	"net/http"
)

// problemBase starts every problem type URI, as in idempotency.Middleware's
// answers, so a client sees one family of problems from this API.
const problemBase = "urn:sagaflow:problem:"

// FieldError names one field of a request that is wrong and says why.
// Field is a path into the request: "customer_id", "lines[0].quantity",
// "body" for the body as a whole, "limit" for a query parameter, "id" for a
// path parameter.
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// Problem is an RFC 9457 problem document, with the validation errors
// extension of docs/http-api.md.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail"`
	Errors []FieldError `json:"errors,omitempty"`
}

func writeProblem(w http.ResponseWriter, status int, typ, title, detail string, errs ...FieldError) {
	b, _ := json.Marshal(Problem{Type: problemBase + typ, Title: title, Status: status, Detail: detail, Errors: errs})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// invalid answers a request whose fields are wrong: 400 when it does not
// have the shape of the schema (not JSON, a wrong type, an unknown field),
// 422 when it has but its values cannot be accepted.
func invalid(w http.ResponseWriter, status int, errs []FieldError) {
	detail := "The request has an invalid field: " + errs[0].Field + " " + errs[0].Detail + "."
	if len(errs) > 1 {
		detail = "The request has invalid fields; see errors."
	}
	title := "Invalid request"
	if status == http.StatusBadRequest {
		title = "Malformed request"
	}
	writeProblem(w, status, "validation", title, detail, errs...)
}
