package sagatest

import (
	"encoding/json"
	"reflect"
	"testing"
)

// JSONVariants returns each sample, every truncation of it, and, for each
// byte in turn, the sample with that byte replaced by each character that
// matters to JSON (and two bytes that are never valid in it): the bodies a
// damaged or hostile record could carry.
func JSONVariants(samples ...[]byte) [][]byte {
	var out [][]byte
	for _, s := range samples {
		out = append(out, s)
		for n := range len(s) {
			out = append(out, s[:n])
		}
		for i := range s {
			for _, c := range []byte(`"{}[],:0-e\ x` + "\xff\x00") {
				if s[i] == c {
					continue
				}
				b := append([]byte(nil), s...)
				b[i] = c
				out = append(out, b)
			}
		}
	}
	return out
}

// DecodesLikeEncodingJSON holds decode (saga.DecodeJSON, or a decoder like
// it) to encoding/json for the type T: for every variant of samples
// (JSONVariants), decode and json.Unmarshal into a new T both refuse it, or
// both accept it and give deeply equal values. It returns how many bodies
// it checked. The services decode the bodies of records with a faster
// decoder than encoding/json and rely on encoding/json's semantics: what
// it refuses is dead-lettered, and what it accepts means what it means to
// encoding/json.
func DecodesLikeEncodingJSON[T any](t testing.TB, decode func([]byte, any) error, samples ...[]byte) int {
	t.Helper()
	if len(samples) == 0 {
		t.Fatal("DecodesLikeEncodingJSON: no samples")
	}
	var checked int
	for _, b := range JSONVariants(samples...) {
		var want, got T
		stdErr := json.Unmarshal(b, &want)
		err := decode(b, &got)
		switch {
		case (err == nil) != (stdErr == nil):
			t.Fatalf("encoding/json says %v, the decoder says %v, of %q", stdErr, err, b)
		case err == nil && !reflect.DeepEqual(got, want):
			t.Fatalf("decoded differently from encoding/json:\n got %+v\nwant %+v\n of %q", got, want, b)
		}
		checked++
	}
	return checked
}
