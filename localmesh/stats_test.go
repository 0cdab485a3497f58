package localmesh

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestStatsGroupsRPCsBySourceMethodAndOutcome(t *testing.T) {
	s := NewStats(time.Minute)
	t0 := time.Unix(1000, 0)
	lines := []string{
		`{"seq":1,"method":"BuyBook","code":"OK","version":"v1","cluster":"east"}`,
		`{"seq":2,"method":"BuyBook","code":"OK","version":"v2","cluster":"west"}`,
		`{"seq":3,"method":"BuyBook","code":"OK","version":"v2","cluster":"west"}`,
		`{"seq":4,"method":"BuyBook","code":"PermissionDenied","error":"rbac"}`,
		`2026/11/26 log line that is not a result`,
	}
	for i, l := range lines {
		s.RecordLine("bookbuyer @ east", []byte(l), t0.Add(time.Duration(i)*time.Second))
	}
	rows := s.Rows(t0.Add(4*time.Second), 10*time.Second)
	if len(rows) != 3 {
		t.Fatalf("rows = %+v", rows)
	}
	got := map[string]float64{}
	for _, r := range rows {
		got[r.Outcome.String()] = r.Share
	}
	if got["bookstore-v2 @ west"] != 0.5 || got["bookstore-v1 @ east"] != 0.25 || got["DENIED"] != 0.25 {
		t.Errorf("shares = %v", got)
	}
	var buf bytes.Buffer
	Render(&buf, rows, 10*time.Second)
	if !strings.Contains(buf.String(), "bookstore-v2 @ west") || !strings.Contains(buf.String(), "DENIED") {
		t.Errorf("table:\n%s", buf.String())
	}
	// Old samples fall out of the kept history.
	s.Record("bookbuyer @ east", Result{Method: "BuyBook", Code: "OK", Version: "v1", Cluster: "east"}, t0.Add(2*time.Minute))
	if n := len(s.Count(t0, t0.Add(time.Hour))); n != 1 {
		t.Errorf("after a minute %d kinds of result kept, want 1", n)
	}
}

func TestCallsAreOneClientsRPCsOfOneMethodInOrderWithTheirErrors(t *testing.T) {
	s := NewStats(time.Minute)
	t0 := time.Unix(1000, 0)
	for i, l := range []string{
		`{"seq":1,"method":"BuyBook","code":"OK","version":"v1","cluster":"east"}`,
		`{"seq":2,"method":"ListBooks","code":"PermissionDenied","error":"denied by rbac"}`,
		`{"seq":3,"method":"BuyBook","code":"PermissionDenied","error":"denied by rbac"}`,
		`{"seq":4,"method":"BuyBook","code":"OK","version":"v2","cluster":"east"}`,
	} {
		s.RecordLine("bookbuyer @ east", []byte(l), t0.Add(time.Duration(i)*time.Second))
	}
	s.RecordLine("bookthief @ east", []byte(`{"seq":1,"method":"BuyBook","code":"OK","version":"v1","cluster":"east"}`), t0.Add(3*time.Second))

	got := s.Calls("bookbuyer @ east", "BuyBook", t0.Add(time.Second))
	want := []Call{
		{At: t0.Add(2 * time.Second), Outcome: Outcome{Code: "PermissionDenied"}, Error: "denied by rbac"},
		{At: t0.Add(3 * time.Second), Outcome: Outcome{OK: true, Version: "v2", Cluster: "east"}},
	}
	if len(got) != len(want) {
		t.Fatalf("calls = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("call %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
