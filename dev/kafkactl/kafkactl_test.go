package kafkactl

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseRoutesReadsOneLinePerBroker(t *testing.T) {
	got, err := parseRoutes("1 127.0.0.1:19292 127.0.0.1:19192\n2 127.0.0.1:19294 127.0.0.1:19194\n", 2)
	want := []Route{{1, "127.0.0.1:19292", "127.0.0.1:19192"}, {2, "127.0.0.1:19294", "127.0.0.1:19194"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("parseRoutes = %v, %v; want %v", got, err, want)
	}
	for out, wantErr := range map[string]string{
		"1 127.0.0.1:19292\n": "is not",
		"2 a b\n":             "for node 1",
		"1 a b\n":             "1 broker(s), the cluster has 2",
	} {
		if _, err := parseRoutes(out, 2); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("parseRoutes(%q) = %v, want an error saying %q", out, err, wantErr)
		}
	}
}
