package stock

import (
	"testing"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/sagatest"
)

// TestCommandBodyDecodesLikeEncodingJSON holds the decoder of every stock
// command's body (saga.DecodeCommand) to encoding/json, whole and damaged.
func TestCommandBodyDecodesLikeEncodingJSON(t *testing.T) {
	n := sagatest.DecodesLikeEncodingJSON[order](t, saga.DecodeJSON,
		[]byte(`{"order_id":"o-1","customer_id":"c-1","lines":[{"product_id":"p-1","quantity":2,"unit_price_cents":1250},{"product_id":"p-2","quantity":1}],"total_cents":2500}`),
		[]byte(`{"Lines":[{"Product_ID":"p\u0000","quantity":9223372036854775807}],"order_id":null}`))
	t.Logf("%d bodies decoded alike", n)
}

// TestResultDecodesLikeEncodingJSON holds idempotency.Result.Decode to
// encoding/json on the outcomes stock's scripts record, whole and damaged.
func TestResultDecodesLikeEncodingJSON(t *testing.T) {
	decode := func(b []byte, v any) error { return idempotency.Result{Outcome: string(b)}.Decode(v) }
	n := sagatest.DecodesLikeEncodingJSON[Result](t, decode,
		[]byte(`{"ok":true,"lines":[{"product_id":"p-1","quantity":2}]}`),
		[]byte(`{"ok":false,"reason":"out of stock: p-1 (1 left, 2 wanted)"}`),
		[]byte(`{"ok":true,"null":true,"reason":"nothing to release"}`))
	t.Logf("%d outcomes decoded alike", n)
}
