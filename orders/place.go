package orders

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/saga"
)

// maxIDLen bounds customer and product ids in a request: longer ones cannot
// exist, and keeping them short keeps them safe to log and echo.
const maxIDLen = 64

// placeRequest is the body of POST /orders. Pointers and raw values tell a
// missing field from a zero one, and let every error name its field.
type placeRequest struct {
	CustomerID *string           `json:"customer_id"`
	Lines      []json.RawMessage `json:"lines"`
	Scenario   *string           `json:"scenario"`
}

type lineRequest struct {
	ProductID *string         `json:"product_id"`
	Quantity  json.RawMessage `json:"quantity"`
}

// request is a validated placeRequest.
type request struct {
	CustomerID string        `json:"customer_id"`
	Lines      []requestLine `json:"lines"`
	Scenario   string        `json:"scenario"`
}

type requestLine struct {
	ProductID string `json:"product_id"`
	Quantity  int64  `json:"quantity"`
}

// placeOrder serves POST /orders, behind idempotency.Middleware: it runs
// once per Idempotency-Key, and its answer (unless a 5xx) is what every
// retry with that key gets.
func (s *Service) placeOrder(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			writeProblem(w, http.StatusUnsupportedMediaType, "unsupported-media-type", "Unsupported media type",
				"The body must be JSON (Content-Type: application/json).",
				FieldError{Field: "Content-Type", Detail: "must be application/json"})
			return
		}
	}
	req, status, errs := s.parsePlace(r)
	switch {
	case status == http.StatusRequestEntityTooLarge:
		tooLarge(w, s.cfg.MaxBodyBytes)
		return
	case len(errs) > 0:
		invalid(w, status, errs)
		return
	}
	products, errs, err := s.lookup(r.Context(), req)
	switch {
	case err != nil:
		s.unavailable(w, "catalogue or accounts", err)
		return
	case len(errs) > 0:
		invalid(w, http.StatusUnprocessableEntity, errs)
		return
	}
	placed, errs := price(req, products, r.Header.Get("Idempotency-Key"))
	if len(errs) > 0 {
		invalid(w, http.StatusUnprocessableEntity, errs)
		return
	}
	data, err := json.Marshal(placed)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "internal", "Internal error", "The order could not be encoded.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.SendTimeout)
	defer cancel()
	// Only an acknowledged OrderPlaced is an accepted order: answering 202
	// before Kafka has it could accept an order that never runs. A failure
	// is a 503, which the idempotency middleware does not record, so the
	// client's retry with the same key sends it again, under the same id.
	if err := s.deps.Producer.Send(ctx, saga.StartMessage(s.cfg.EventsTopic, TypeOrderPlaced, placed.OrderID, data)); err != nil {
		s.unavailable(w, "message broker", err)
		return
	}
	o := s.deps.Orders.placed(placed, time.Now())
	s.metrics.placed.Add(1)
	s.log.Info("order placed", zap.String("saga_id", placed.OrderID), zap.String("customer_id", placed.CustomerID),
		zap.Int64("total_cents", placed.TotalCents))
	w.Header().Set("Location", "/orders/"+placed.OrderID)
	writeJSON(w, http.StatusAccepted, o)
}

// parsePlace reads and checks the body's shape and values, and returns every
// problem it finds, not only the first, so a form can mark all its fields.
func (s *Service) parsePlace(r *http.Request) (request, int, []FieldError) {
	body, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return request{}, http.StatusRequestEntityTooLarge, []FieldError{{Field: "body", Detail: errTooLarge}}
	}
	if err != nil {
		return request{}, http.StatusBadRequest, []FieldError{{Field: "body", Detail: "could not be read: " + err.Error()}}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return request{}, http.StatusBadRequest, []FieldError{{Field: "body", Detail: "is empty; send a JSON order"}}
	}
	var pr placeRequest
	if fe := decodeStrict(body, &pr, ""); fe != nil {
		return request{}, http.StatusBadRequest, []FieldError{*fe}
	}

	var bad, unproc []FieldError
	var req request
	switch {
	case pr.CustomerID == nil || *pr.CustomerID == "":
		unproc = append(unproc, FieldError{"customer_id", "is required"})
	case len(*pr.CustomerID) > maxIDLen:
		unproc = append(unproc, FieldError{"customer_id", fmt.Sprintf("must be at most %d characters", maxIDLen)})
	default:
		req.CustomerID = *pr.CustomerID
	}
	if pr.Scenario != nil {
		switch *pr.Scenario {
		case "", ScenarioSlowPayment:
			req.Scenario = *pr.Scenario
		default:
			unproc = append(unproc, FieldError{"scenario", fmt.Sprintf("must be \"\" or %q", ScenarioSlowPayment)})
		}
	}
	switch {
	case pr.Lines == nil:
		unproc = append(unproc, FieldError{"lines", "is required"})
	case len(pr.Lines) == 0 || len(pr.Lines) > s.cfg.MaxLines:
		unproc = append(unproc, FieldError{"lines", fmt.Sprintf("must have 1 to %d lines", s.cfg.MaxLines)})
	default:
		seen := map[string]int{}
		for i, raw := range pr.Lines {
			field := fmt.Sprintf("lines[%d]", i)
			var lr lineRequest
			if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
				bad = append(bad, FieldError{field, "must be an object"})
				continue
			}
			if fe := decodeStrict(raw, &lr, field); fe != nil {
				bad = append(bad, *fe)
				continue
			}
			var line requestLine
			switch {
			case lr.ProductID == nil || *lr.ProductID == "":
				unproc = append(unproc, FieldError{field + ".product_id", "is required"})
			case len(*lr.ProductID) > maxIDLen:
				unproc = append(unproc, FieldError{field + ".product_id", fmt.Sprintf("must be at most %d characters", maxIDLen)})
			default:
				line.ProductID = *lr.ProductID
				if j, dup := seen[line.ProductID]; dup {
					unproc = append(unproc, FieldError{field + ".product_id",
						fmt.Sprintf("is already ordered in lines[%d]; put the whole quantity in one line", j)})
				}
				seen[line.ProductID] = i
			}
			q, status, detail := s.quantity(lr.Quantity)
			switch status {
			case http.StatusBadRequest:
				bad = append(bad, FieldError{field + ".quantity", detail})
			case http.StatusUnprocessableEntity:
				unproc = append(unproc, FieldError{field + ".quantity", detail})
			}
			line.Quantity = q
			req.Lines = append(req.Lines, line)
		}
	}
	if len(bad) > 0 {
		return request{}, http.StatusBadRequest, append(bad, unproc...)
	}
	if len(unproc) > 0 {
		return request{}, http.StatusUnprocessableEntity, unproc
	}
	return req, 0, nil
}

// quantity reads a line's quantity: a JSON number that is a whole number
// from 1 to MaxQuantity. Any other number is 422 (the shape is right, the
// value is not); a string, object or the like is 400.
func (s *Service) quantity(raw json.RawMessage) (int64, int, string) {
	rng := fmt.Sprintf("must be between 1 and %d", s.cfg.MaxQuantity)
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, http.StatusUnprocessableEntity, "is required"
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, http.StatusBadRequest, "must be a number"
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	switch {
	case err == nil && n >= 1 && n <= s.cfg.MaxQuantity:
		return n, 0, ""
	case err == nil, errors.Is(err, strconv.ErrRange):
		return 0, http.StatusUnprocessableEntity, rng
	default: // 2.5, 1e3: numbers, but not whole ones written as such
		return 0, http.StatusUnprocessableEntity, "must be a whole number; " + rng
	}
}

// lookup finds the customer and the products, so that an order for someone
// or something that does not exist is refused now rather than started and
// cancelled. It returns the products by id, the unknown references, or an
// error when the stores cannot be read (the request may be retried).
func (s *Service) lookup(ctx context.Context, req request) (map[string]Product, []FieldError, error) {
	var errs []FieldError
	if _, err := s.customer(ctx, req.CustomerID); errors.Is(err, ErrNotFound) {
		errs = append(errs, FieldError{"customer_id", fmt.Sprintf("unknown customer %q", req.CustomerID)})
	} else if err != nil {
		return nil, nil, err
	}
	products := make(map[string]Product, len(req.Lines))
	for i, l := range req.Lines {
		p, err := s.product(ctx, l.ProductID)
		switch {
		case errors.Is(err, ErrNotFound):
			errs = append(errs, FieldError{fmt.Sprintf("lines[%d].product_id", i), fmt.Sprintf("unknown product %q", l.ProductID)})
		case err != nil:
			return nil, nil, err
		default:
			products[l.ProductID] = p
		}
	}
	return products, errs, nil
}

// product and customer read through the lookup caches.
func (s *Service) product(ctx context.Context, id string) (Product, error) {
	return s.products.read(ctx, id, s.deps.Catalog.Product)
}

func (s *Service) customer(ctx context.Context, id string) (Customer, error) {
	return s.customers.read(ctx, id, s.deps.Accounts.Customer)
}

// price makes the order from the catalogue's prices. The order id is
// derived from the Idempotency-Key and the request, so a second run of this
// handler for the same request (the middleware runs it again if it could
// not record the first answer) places the same order, which the
// orchestrator starts once.
func price(req request, products map[string]Product, key string) (OrderPlaced, []FieldError) {
	o := OrderPlaced{OrderID: orderID(key, req), CustomerID: req.CustomerID, Scenario: req.Scenario,
		Lines: make([]Line, len(req.Lines))}
	for i, l := range req.Lines {
		p := products[l.ProductID]
		// A catalogue price so large that the total overflows is no
		// client's mistake, but no order can be taken at it either.
		if p.PriceCents < 0 || p.PriceCents > math.MaxInt64/l.Quantity || o.TotalCents > math.MaxInt64-p.PriceCents*l.Quantity {
			return OrderPlaced{}, []FieldError{{fmt.Sprintf("lines[%d].quantity", i), "makes a total that is out of range"}}
		}
		o.Lines[i] = Line{ProductID: l.ProductID, Quantity: l.Quantity, UnitPriceCents: p.PriceCents}
		o.TotalCents += p.PriceCents * l.Quantity
	}
	return o, nil
}

// orderID is "ord-" and 128 bits of SHA-256 over the key and the request.
func orderID(key string, req request) string {
	key = strings.TrimSpace(key)
	if len(key) >= 2 && key[0] == '"' && key[len(key)-1] == '"' {
		key = key[1 : len(key)-1] // the structured-field form of the same key
	}
	b, _ := json.Marshal(req)
	h := sha256.New()
	h.Write([]byte("sagaflow order\x00"))
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write(b)
	return "ord-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// errTooLarge is the detail of a body over the limit.
const errTooLarge = "is too large"

// decodeStrict decodes one JSON value into v, refusing unknown fields and
// anything after the value, and names the field at fault. prefix is the
// path of the value ("" for the body).
func decodeStrict(data []byte, v any, prefix string) *FieldError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			return &FieldError{orBody(prefix), "has data after the JSON value"}
		}
		return nil
	}
	join := func(f string) string {
		if prefix == "" {
			return f
		}
		return prefix + "." + f
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return &FieldError{orBody(prefix), fmt.Sprintf("is not valid JSON (at byte %d: %v)", syn.Offset, syn)}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &FieldError{orBody(prefix), "is not valid JSON (it ends too soon)"}
	case errors.As(err, &typ):
		if typ.Field == "" {
			return &FieldError{orBody(prefix), "must be a JSON object"}
		}
		return &FieldError{join(typ.Field), "must be " + jsonKind(typ.Type.Kind().String())}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		return &FieldError{join(f), "is not a known field"}
	}
	return &FieldError{orBody(prefix), "cannot be read: " + err.Error()}
}

func orBody(prefix string) string {
	if prefix == "" {
		return "body"
	}
	return prefix
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string", "ptr":
		return "a string"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "a " + goKind
}

// decodeOptional decodes a body that may be empty.
func decodeOptional(r *http.Request, v any) []FieldError {
	body, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return []FieldError{{"body", errTooLarge}}
	}
	if err != nil {
		return []FieldError{{"body", "could not be read: " + err.Error()}}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if fe := decodeStrict(body, v, ""); fe != nil {
		return []FieldError{*fe}
	}
	return nil
}
