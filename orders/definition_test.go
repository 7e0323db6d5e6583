package orders

import (
	"encoding/json"
	"testing"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/sagatest"
)

// TestEverySagaPassesTheFourTests runs sagatest's four tests (plain, actions
// twice, a failure at each step, compensations twice) for every definition
// the orders service registers.
func TestEverySagaPassesTheFourTests(t *testing.T) {
	reg, err := saga.NewRegistry(Definition(DefaultSagaConfig()))
	if err != nil {
		t.Fatal(err)
	}
	start, _ := json.Marshal(OrderPlaced{OrderID: "o1", CustomerID: "alice", TotalCents: 500,
		Lines: []Line{{ProductID: "tea", Quantity: 2, UnitPriceCents: 250}}})
	sagatest.RunRegistry(t, reg, map[string]json.RawMessage{SagaType: start})
	t.Run("sequential", func(t *testing.T) { sagatest.Run(t, Definition(SagaConfig{Sequential: true}), start) })
}
