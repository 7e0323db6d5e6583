package orders

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

// ArchivedOrder is an ended order as the Archive keeps it: its id and its
// record, which only the read model reads (encodeArchived).
type ArchivedOrder struct {
	ID    string
	Value []byte
}

// archived is an archive record read back: Order's JSON, which an order
// without its snapshot is kept as (and every order was before the
// snapshot was kept), or the order's placement time and its snapshot.
type archived struct {
	Order
	Snapshot json.RawMessage `json:"snapshot"`
}

// encodeArchived makes the archive record of an ended order. A packed
// order (entry.packed) is kept as the snapshot that ended it, copied as it
// came, after the one field of the order the snapshot cannot give back
// (see fromSnapshot): {"placed_at":"…","snapshot":{…}}. Encoding the whole
// order instead meant unpacking that snapshot and encoding the order with
// its steps and history, for every order that passes: 9 to 20% of the
// orders API's CPU at saturation once the sweep runs, for records that
// are seldom read again. The record is about 13% longer than the whole
// order's JSON (the snapshot also carries the saga's trace and deadline),
// and stays JSON for an operator reading Redis.
func encodeArchived(base Order, packed []byte) ([]byte, error) {
	if packed == nil {
		return json.Marshal(base)
	}
	at, err := base.PlacedAt.MarshalJSON()
	if err != nil {
		return nil, err
	}
	const head, field = `{"placed_at":`, `,"snapshot":`
	b := make([]byte, 0, len(head)+len(at)+len(field)+len(packed)+1)
	b = append(append(append(b, head...), at...), field...)
	b = append(b, packed...)
	return append(b, '}'), nil
}

// decodeArchived reads an archive record back into the order it was. It is
// called for a GET of an order past its memory window, not on a hot path,
// so the record's frame is read with encoding/json (the snapshot inside
// with saga.DecodeSnapshot, like every snapshot).
func decodeArchived(b []byte) (Order, error) {
	var a archived
	if err := json.Unmarshal(b, &a); err != nil {
		return Order{}, err
	}
	if len(bytes.TrimSpace(a.Snapshot)) == 0 {
		return a.Order, nil
	}
	return fromSnapshot(a.PlacedAt, a.Snapshot)
}

// fromSnapshot makes the order a packed entry's get gives from its
// snapshot and placement time: the read model took the id, total, status
// and last change of a packed order from that snapshot (snapshot, create).
func fromSnapshot(placedAt time.Time, snapshot []byte) (Order, error) {
	in, placed, err := readSnapshot(snapshot)
	if err != nil {
		return Order{}, err
	}
	o := Order{OrderID: in.ID, TotalCents: placed.TotalCents, Status: statusOf(in.State), PlacedAt: placedAt}
	if n := len(in.History); n > 0 {
		o.UpdatedAt = in.History[n-1].At.UTC()
	}
	return complete(o, in, placed), nil
}

// unpack completes base (id, total, status and times) from the snapshot
// that ended the order.
func unpack(base Order, snapshot []byte) (Order, error) {
	in, placed, err := readSnapshot(snapshot)
	if err != nil {
		return Order{}, fmt.Errorf("orders: %s: %w", base.OrderID, err)
	}
	return complete(base, in, placed), nil
}

func readSnapshot(snapshot []byte) (saga.Instance, OrderPlaced, error) {
	in, err := saga.DecodeSnapshot(snapshot)
	if err != nil {
		return saga.Instance{}, OrderPlaced{}, fmt.Errorf("the snapshot: %w", err)
	}
	placed, err := decodeOrderPlaced(in.Data)
	if err != nil {
		return saga.Instance{}, OrderPlaced{}, fmt.Errorf("the snapshot of %s has no order: %w", in.ID, err)
	}
	return in, placed, nil
}

// complete fills in what a packed order leaves to its snapshot: its
// customer, lines, reason, steps and history.
func complete(o Order, in saga.Instance, placed OrderPlaced) Order {
	o.CustomerID, o.Scenario, o.Lines, o.Reason = placed.CustomerID, placed.Scenario, nonNil(placed.Lines), in.Reason
	o.Steps, o.History, o.step = nonNil(in.Steps), nonNil(in.History), in.Step
	return o
}
