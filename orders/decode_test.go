package orders

import (
	"testing"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/sagatest"
)

// TestOrderPlacedDecodesLikeEncodingJSON holds the decoder of
// decodeOrderPlaced (which the orchestrator runs for every command it builds
// and the read model for every new order) to encoding/json on an order as
// the API writes it and on odd ones, whole and damaged.
func TestOrderPlacedDecodesLikeEncodingJSON(t *testing.T) {
	n := sagatest.DecodesLikeEncodingJSON[OrderPlaced](t, saga.DecodeJSON,
		[]byte(`{"order_id":"o-1","customer_id":"c-1","lines":[{"product_id":"p-1","quantity":2,"unit_price_cents":1250}],"total_cents":2500,"scenario":""}`),
		[]byte(`{"ORDER_ID":"o-\u00e9","customer_id":"c\"1\\","lines":[],"total_cents":-9223372036854775808,"scenario":"slow-payment","new":{}}`),
		[]byte(` {"lines":[{"quantity":1e2},{"product_id":null}],"total_cents":1.5} `))
	t.Logf("%d bodies decoded alike", n)
}
