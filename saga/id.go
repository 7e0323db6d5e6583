package saga

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"
)

// NewMessageID returns a new UUIDv7 for the current time. UUIDv7 sorts by
// creation time (to the millisecond), which keeps message ids readable in
// logs and dead-letter listings; ids made within one millisecond are unique
// but not ordered.
func NewMessageID() string {
	var r [10]byte
	rand.Read(r[:]) // never fails: crypto/rand crashes the program instead
	return formatUUIDv7(time.Now().UnixMilli(), r)
}

// UUIDv7 returns the UUIDv7 for t with random bits read from r, for callers
// (and tests) that bring their own clock and randomness.
func UUIDv7(t time.Time, r io.Reader) (string, error) {
	var b [10]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("saga: uuid: reading random bits: %w", err)
	}
	return formatUUIDv7(t.UnixMilli(), b), nil
}

// formatUUIDv7 lays out RFC 9562 section 5.7: 48 bits of Unix milliseconds,
// version 7, 12 random bits, variant 10, 62 random bits.
func formatUUIDv7(ms int64, r [10]byte) string {
	var u [16]byte
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	copy(u[6:], r[:])
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}

// NewTraceparent returns a W3C traceparent that starts a new trace:
// "00-<32 hex trace id>-<16 hex parent id>-01" (sampled).
func NewTraceparent() string {
	var id [16]byte
	rand.Read(id[:])
	return "00-" + hex.EncodeToString(id[:]) + "-" + newSpanID() + "-01"
}

// ChildTraceparent continues parent's trace with a new parent id, keeping its
// flags, so every message of a saga shares one trace id. An empty or invalid
// parent starts a new trace, as the W3C spec asks.
func ChildTraceparent(parent string) string {
	if !validTraceparent(parent) {
		return NewTraceparent()
	}
	return "00-" + parent[3:35] + "-" + newSpanID() + "-" + parent[53:55]
}

func newSpanID() string {
	var b [8]byte
	rand.Read(b[:])
	if b == [8]byte{} {
		b[7] = 1 // all zeros is invalid; 2^-64 odds, but cheap to rule out
	}
	return hex.EncodeToString(b[:])
}

// validTraceparent accepts version 00 exactly, and a later version's first
// four fields, per W3C Trace Context section 3.2.
func validTraceparent(s string) bool {
	if len(s) < 55 || (len(s) > 55 && (s[:2] == "00" || s[55] != '-')) {
		return false
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	version, trace, parent, flags := s[0:2], s[3:35], s[36:52], s[53:55]
	return lowerHex(version) && version != "ff" &&
		lowerHex(trace) && !allZero(trace) &&
		lowerHex(parent) && !allZero(parent) &&
		lowerHex(flags)
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

// TraceID returns the 32-hex trace id of a valid traceparent, or "".
func TraceID(traceparent string) string {
	if !validTraceparent(traceparent) {
		return ""
	}
	return traceparent[3:35]
}
