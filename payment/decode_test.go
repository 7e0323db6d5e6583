package payment

import (
	"testing"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/sagatest"
)

// TestChargeBodyDecodesLikeEncodingJSON holds the decoder of every payment
// command's body (saga.DecodeCommand) to encoding/json, whole and damaged.
func TestChargeBodyDecodesLikeEncodingJSON(t *testing.T) {
	n := sagatest.DecodesLikeEncodingJSON[order](t, saga.DecodeJSON,
		[]byte(`{"order_id":"o-1","customer_id":"c-1","lines":[{"product_id":"p-1","quantity":2,"unit_price_cents":1250}],"total_cents":2500,"scenario":""}`),
		[]byte(`{"customer_id":"c\ud83d\ude00","total_cents":-1,"scenario":"slow-payment","lines":null,"total_cents":7}`))
	t.Logf("%d bodies decoded alike", n)
}

// TestResultDecodesLikeEncodingJSON holds idempotency.Result.Decode to
// encoding/json on the outcomes payment's scripts record, whole and damaged.
func TestResultDecodesLikeEncodingJSON(t *testing.T) {
	decode := func(b []byte, v any) error { return idempotency.Result{Outcome: string(b)}.Decode(v) }
	n := sagatest.DecodesLikeEncodingJSON[Result](t, decode,
		[]byte(`{"ok":true,"customer_id":"c-1","amount_cents":"2500"}`),
		[]byte(`{"ok":false,"reason":"insufficient funds: balance 1.00, order 25.00"}`),
		[]byte(`{"amount_cents":7,"ok":true}`),
		[]byte(`{"amount_cents":"-9223372036854775808","null":true}`))
	t.Logf("%d outcomes decoded alike", n)
}
