package wire

import (
	"context"
	"errors"
	"fmt"

	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/stock"
)

// Catalog adapts the stock store to orders.Catalog: the orders package never
// imports stock (docs/design.md), so the wiring translates.
type Catalog struct{ Store *stock.Store }

// Products returns the stock store's products.
func (c Catalog) Products(ctx context.Context) ([]orders.Product, error) {
	ps, err := c.Store.Products(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]orders.Product, len(ps))
	for i, p := range ps {
		out[i] = orderProduct(p)
	}
	return out, nil
}

// Product returns one product; an unknown one is orders.ErrNotFound.
func (c Catalog) Product(ctx context.Context, id string) (orders.Product, error) {
	p, err := c.Store.Product(ctx, id)
	if errors.Is(err, stock.ErrUnknownProduct) {
		return orders.Product{}, fmt.Errorf("%w: %w", orders.ErrNotFound, err)
	}
	if err != nil {
		return orders.Product{}, err
	}
	return orderProduct(p), nil
}

func orderProduct(p stock.Product) orders.Product {
	return orders.Product{ID: p.ID, Name: p.Name, PriceCents: p.PriceCents,
		Available: p.Available, Reserved: p.Reserved, Sold: p.Sold}
}

// Accounts adapts the payment store to orders.Accounts.
type Accounts struct{ Store *payment.Store }

// Customers returns the payment store's customers.
func (a Accounts) Customers(ctx context.Context) ([]orders.Customer, error) {
	cs, err := a.Store.Customers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]orders.Customer, len(cs))
	for i, c := range cs {
		out[i] = orderCustomer(c)
	}
	return out, nil
}

// Customer returns one customer; an unknown one is orders.ErrNotFound.
func (a Accounts) Customer(ctx context.Context, id string) (orders.Customer, error) {
	c, err := a.Store.Customer(ctx, id)
	if errors.Is(err, payment.ErrUnknownCustomer) {
		return orders.Customer{}, fmt.Errorf("%w: %w", orders.ErrNotFound, err)
	}
	if err != nil {
		return orders.Customer{}, err
	}
	return orderCustomer(c), nil
}

func orderCustomer(c payment.Customer) orders.Customer {
	return orders.Customer{ID: c.ID, Name: c.Name, BalanceCents: c.BalanceCents, OrderLimitCents: c.LimitCents}
}
