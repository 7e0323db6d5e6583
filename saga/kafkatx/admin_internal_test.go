package kafkatx

import (
	"math"
	"testing"
)

// The values are Java's: "hello".hashCode() is 99162322, "Aa" and "BB"
// collide, and a non-ASCII rune counts as its UTF-16 code units.
func TestJavaHashCode(t *testing.T) {
	for s, want := range map[string]int32{"": 0, "a": 97, "hello": 99162322, "Aa": 2112, "BB": 2112,
		"polygenelubricants": math.MinInt32, "é": 233, "😀": 1772899} {
		if got := javaHashCode(s); got != want {
			t.Errorf("javaHashCode(%q) = %d, want %d", s, got, want)
		}
	}
	if javaAbs(math.MinInt32) != 0 || javaAbs(-5) != 5 || javaAbs(7) != 7 {
		t.Error("javaAbs differs from Kafka's Utils.abs")
	}
}
