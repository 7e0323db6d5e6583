package main

import (
	"flag"
	"os"

	"github.com/sagaflow/sagaflow/orders"
)

// sagaTimingFlags registers the order saga's timings on fs and returns a
// function that reads them after Parse.
func sagaTimingFlags(fs *flag.FlagSet, def orders.SagaConfig) func() orders.SagaConfig {
	timeout := fs.Duration("step-timeout", def.StepTimeout, "how long one attempt of a step waits for its reply")
	attempts := fs.Int("attempts", def.Attempts, "attempts of each action and each compensation")
	backoff := fs.Duration("backoff", def.Backoff, "wait after a failed attempt, doubling each time")
	maxBackoff := fs.Duration("max-backoff", def.MaxBackoff, "cap of the doubling backoff")
	deadline := fs.Duration("deadline", def.Deadline, "how long a saga may take before it confirms; past it, it compensates")
	return func() orders.SagaConfig {
		c := def
		c.StepTimeout, c.Attempts, c.Backoff, c.MaxBackoff, c.Deadline = *timeout, *attempts, *backoff, *maxBackoff, *deadline
		return c
	}
}

// httpFlags are the orders service's flags, which `orders` and `demo` share.
type httpFlags struct {
	addr, token *string
}

// ordersFlags registers --addr (default addr, help addrHelp) and
// --operator-token on fs.
func ordersFlags(fs *flag.FlagSet, addr, addrHelp string) *httpFlags {
	return &httpFlags{
		addr:  fs.String("addr", addr, addrHelp),
		token: fs.String("operator-token", "", "bearer token of the operator endpoints (env SAGAFLOW_OPERATOR_TOKEN; prefer the environment, flags show in ps); none: they answer 401"),
	}
}

// config is the orders service's configuration; the token comes from the
// environment when the flag is empty.
func (h *httpFlags) config() orders.Config {
	token := *h.token
	if token == "" {
		token = os.Getenv("SAGAFLOW_OPERATOR_TOKEN")
	}
	return orders.Config{OperatorToken: token}
}
