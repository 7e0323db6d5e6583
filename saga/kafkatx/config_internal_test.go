package kafkatx

import (
	"testing"
	"time"
)

// The loops' producers hold records by default (the commit sends them), and
// a negative Linger is how a caller asks for none at all: zero cannot say
// it, because it is the default.
func TestLingerDefaults(t *testing.T) {
	for _, c := range []struct{ set, want time.Duration }{
		{0, DefaultLinger},
		{-1, 0},
		{7 * time.Millisecond, 7 * time.Millisecond}, // not the default: kept as given
	} {
		if got := (Config{Linger: c.set}).withDefaults().Linger; got != c.want {
			t.Errorf("Linger %v: withDefaults gives %v, want %v", c.set, got, c.want)
		}
	}
}
