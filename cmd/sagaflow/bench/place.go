package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/stock"
)

// The bench's own catalogue and customers. Their ids start "bench-", so
// they never meet the demo's.
const (
	benchProducts  = 16
	benchCustomers = 16
	// EmptyProduct has no stock: an order for it is refused by stock.
	EmptyProduct = "bench-empty"
	// PoorCustomer has no money: an order of hers is declined by payment.
	PoorCustomer = "bench-poor"
	// plenty is the stock of each product and the balance of each customer
	// (in cents): 10^12 orders of one unit at 1.00 before anything runs out.
	plenty = 1_000_000_000_000_00
	price  = 100
)

// ProductID is the i-th bench product.
func ProductID(i int) string { return "bench-p" + strconv.Itoa(i) }

// CustomerID is the i-th bench customer.
func CustomerID(i int) string { return "bench-c" + strconv.Itoa(i) }

// Seed adds the bench's products and customers to the stores on rdb, with
// the default key prefixes the services use. Existing ones are left as they
// are (Seed never resets quantities), so a second run goes on from the first.
func Seed(ctx context.Context, rdb *redis.Client) error {
	st, err := stock.NewStore(stock.Config{}, rdb, nil)
	if err != nil {
		return err
	}
	pay, err := payment.NewStore(payment.Config{}, rdb, nil)
	if err != nil {
		return err
	}
	products := []stock.Product{{ID: EmptyProduct, Name: "bench: never in stock", PriceCents: price}}
	for i := range benchProducts {
		products = append(products, stock.Product{ID: ProductID(i), Name: "bench product " + strconv.Itoa(i),
			PriceCents: price, Available: plenty / price})
	}
	customers := []payment.Customer{{ID: PoorCustomer, Name: "bench: no money"}}
	for i := range benchCustomers {
		customers = append(customers, payment.Customer{ID: CustomerID(i), Name: "bench customer " + strconv.Itoa(i),
			BalanceCents: plenty})
	}
	if _, err := st.Seed(ctx, products); err != nil {
		return fmt.Errorf("bench: seed products: %w", err)
	}
	if _, err := pay.Seed(ctx, customers); err != nil {
		return fmt.Errorf("bench: seed customers: %w", err)
	}
	return nil
}

// HTTPPlacer places orders with POST /orders.
type HTTPPlacer struct {
	url    string
	client *http.Client
}

// NewHTTPPlacer returns a placer for the orders API at url.
func NewHTTPPlacer(url string) *HTTPPlacer {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
	}
	return &HTTPPlacer{url: strings.TrimSuffix(url, "/") + "/orders", client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Place posts the order and returns the id of the order the API accepted.
func (p *HTTPPlacer) Place(ctx context.Context, o Order) (string, error) {
	// Typed rather than a map: encoding/json sorts a map's keys on every
	// call, and at saturation that was 8% of the load generator's CPU,
	// which shares the machine with the system it measures.
	body, _ := json.Marshal(placeBody{CustomerID: o.CustomerID,
		Lines: []placeLine{{ProductID: o.ProductID, Quantity: o.Quantity}}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", o.Key)
	res, err := p.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("POST /orders: %w", trimURL(err))
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if res.StatusCode != http.StatusAccepted {
		return "", refusal(res, b)
	}
	var placed struct {
		OrderID string `json:"order_id"`
	}
	if err := json.Unmarshal(b, &placed); err != nil || placed.OrderID == "" {
		return "", fmt.Errorf("POST /orders: 202 without an order id")
	}
	return placed.OrderID, nil
}

// placeBody is the body of POST /orders.
type placeBody struct {
	CustomerID string      `json:"customer_id"`
	Lines      []placeLine `json:"lines"`
}

type placeLine struct {
	ProductID string `json:"product_id"`
	Quantity  int64  `json:"quantity"`
}

// Refused is an order the API did not take, with the wait it asked for.
type Refused struct {
	// What says why: the status and, for a problem answer, its type (the
	// last part of its URI, e.g. "503 overloaded").
	What string
	// RetryAfter is the Retry-After the API sent; zero without one.
	RetryAfter time.Duration
}

func (e *Refused) Error() string { return "POST /orders: " + e.What }

// refusal reads a non-202 answer into a Refused.
func refusal(res *http.Response, body []byte) *Refused {
	e := &Refused{What: res.Status}
	var p struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(body, &p) == nil && p.Type != "" {
		e.What = fmt.Sprintf("%d %s", res.StatusCode, p.Type[strings.LastIndexAny(p.Type, "/:")+1:])
	}
	if secs, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return e
}

// trimURL drops the per-request detail from an error, so errors count by kind.
func trimURL(err error) error {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return fmt.Errorf("%s", s[i+2:])
	}
	return err
}

// KafkaPlacer places orders as OrderPlaced records on orders.events, priced
// here (the bench's products all cost the same), past the HTTP API.
type KafkaPlacer struct {
	p     *kafkatx.Producer
	topic string
}

// NewKafkaPlacer connects to brokers; Close it after the run.
func NewKafkaPlacer(brokers, topic string) (*KafkaPlacer, error) {
	if topic == "" {
		topic = kafkatx.TopicOrderEvents
	}
	p, err := kafkatx.NewProducer(brokers, nil)
	if err != nil {
		return nil, err
	}
	return &KafkaPlacer{p: p, topic: topic}, nil
}

// Place produces OrderPlaced and waits for Kafka's acknowledgement.
func (k *KafkaPlacer) Place(ctx context.Context, o Order) (string, error) {
	id := "ord-" + o.Key
	data, err := json.Marshal(orders.OrderPlaced{OrderID: id, CustomerID: o.CustomerID, TotalCents: price * o.Quantity,
		Lines: []orders.Line{{ProductID: o.ProductID, Quantity: o.Quantity, UnitPriceCents: price}}})
	if err != nil {
		return "", err
	}
	if err := k.p.Send(ctx, saga.StartMessage(k.topic, orders.TypeOrderPlaced, id, data)); err != nil {
		return "", err
	}
	return id, nil
}

// Close flushes and closes the producer.
func (k *KafkaPlacer) Close() { k.p.Close() }
