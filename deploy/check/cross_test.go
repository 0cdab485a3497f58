package check

import (
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/controller/debug"
	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/xds/server"
)

func view(self string, members ...federate.MemberStatus) *debug.Federation {
	return &debug.Federation{Cluster: self, Federated: true, Status: federate.Status{Cluster: self, Members: members}}
}

func alive(name string) federate.MemberStatus {
	return federate.MemberStatus{Name: name, State: "alive"}
}

func failures(rs []Result) []Result {
	var out []Result
	for _, r := range rs {
		if !r.OK {
			out = append(out, r)
		}
	}
	return out
}

func TestBundleLackingAnothersRootFailsNamingBothAndTheFix(t *testing.T) {
	facts := []Facts{
		{Name: "east", Context: "east", Namespace: "meshfed-system", BundleRoots: []string{"aaaa"}, SigningRoot: "aaaa", BundleSource: "ConfigMap"},
		{Name: "west", Context: "west", Namespace: "meshfed-system", BundleRoots: []string{"bbbb"}, SigningRoot: "bbbb", BundleSource: "ConfigMap"},
	}
	fs := failures(TrustBundles(facts))
	if len(fs) != 2 {
		t.Fatalf("want a failure each way, got %+v", fs)
	}
	for _, f := range fs {
		if !strings.Contains(f.Message, "east") || !strings.Contains(f.Message, "west") {
			t.Errorf("message does not name both clusters: %q", f.Message)
		}
		if !strings.Contains(f.Fix, "meshfed certificate status --contexts east,west") || !strings.Contains(f.Fix, "rollout restart deploy/meshfed-controller") {
			t.Errorf("fix: %q", f.Fix)
		}
	}
}

func TestSameRootsPassAndARotationInProgressWarns(t *testing.T) {
	same := []Facts{
		{Name: "east", BundleRoots: []string{"aaaa"}, SigningRoot: "aaaa"},
		{Name: "west", BundleRoots: []string{"aaaa"}, SigningRoot: "aaaa"},
	}
	if rs := TrustBundles(same); len(rs) != 1 || !rs[0].OK || rs[0].Severity != SeverityOK {
		t.Errorf("same roots: %+v", rs)
	}
	rotating := []Facts{
		{Name: "east", BundleRoots: []string{"aaaa", "cccc"}, SigningRoot: "aaaa"},
		{Name: "west", BundleRoots: []string{"aaaa"}, SigningRoot: "aaaa"},
	}
	if rs := TrustBundles(rotating); len(rs) != 1 || !rs[0].OK || rs[0].Severity != SeverityWarning {
		t.Errorf("rotation: %+v", rs)
	}
}

func TestClockSkewBeyondThresholdFailsWithNTPFix(t *testing.T) {
	sent := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	received := sent.Add(400 * time.Millisecond) // midpoint sent+200ms
	cases := []struct {
		name     string
		reported time.Time
		fails    bool
	}{
		{"in step", sent.Add(200 * time.Millisecond), false},
		{"just within", sent.Add(200*time.Millisecond + MaxClockSkew), false},
		{"ahead", sent.Add(200*time.Millisecond + MaxClockSkew + time.Millisecond), true},
		{"behind", sent.Add(-3 * time.Second), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := view("west")
			f.Now = c.reported
			rs := ClockSkew([]Facts{{Name: "west", Federation: f, Sent: sent, Received: received}}, MaxClockSkew)
			if len(rs) != 1 || rs[0].OK == c.fails {
				t.Fatalf("got %+v", rs)
			}
			if c.fails && rs[0].Fix != "synchronize the clocks (NTP) of west's nodes and of this machine" {
				t.Errorf("fix: %q", rs[0].Fix)
			}
		})
	}
}

func TestStaleCatalogFails(t *testing.T) {
	stale := alive("west")
	stale.Stale, stale.CatalogVersion = true, 7
	facts := []Facts{{Name: "east", Context: "east", Namespace: "meshfed-system", Federation: view("east", alive("east"), stale)}}
	fs := failures(Catalogs(facts))
	if len(fs) != 1 || !strings.Contains(fs[0].Message, "stale catalog of west") || !strings.Contains(fs[0].Fix, "meshfed cluster list --context east") {
		t.Fatalf("got %+v", fs)
	}
	facts[0].Federation = view("east", alive("east"), alive("west"))
	if fs := failures(Catalogs(facts)); len(fs) != 0 {
		t.Errorf("fresh catalogs fail: %+v", fs)
	}
}

func TestMemberNotSeenAliveFails(t *testing.T) {
	suspect := federate.MemberStatus{Name: "west", State: "suspect", Reason: "no ack"}
	cases := []struct {
		name     string
		eastView *debug.Federation
		want     string
		fix      string
	}{
		{"every member alive", view("east", alive("east"), alive("west")), "", ""},
		{"unknown", view("east", alive("east")), "east does not know west", "meshfed cluster join --context west --peer-context east"},
		{"suspect", view("east", alive("east"), suspect), "east sees west suspect (no ack)", "meshfed cluster list --context east"},
		{"federation off", &debug.Federation{Cluster: "east"}, "east's federation is off: it sees no member", "meshfed cluster join --context east --peer-context west"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			facts := []Facts{
				{Name: "east", Context: "east", ClusterName: "east", Federation: c.eastView},
				{Name: "west", Context: "west", ClusterName: "west", Federation: view("west", alive("east"), alive("west"))},
			}
			fs := failures(Membership(facts))
			if c.want == "" {
				if len(fs) != 0 {
					t.Fatalf("got %+v", fs)
				}
				return
			}
			if len(fs) != 1 || fs[0].Message != c.want || !strings.Contains(fs[0].Fix, c.fix) {
				t.Fatalf("got %+v, want %q with fix %q", fs, c.want, c.fix)
			}
		})
	}
}

func TestWriteMarksEachLineAndFailedCountsOnlyFailures(t *testing.T) {
	rs := []Result{ok("east", "crds", "fine"), warn("east", "intermediate-ca", "expires soon", "restart"), fail("", "clock-skew", "off", "ntp")}
	var b strings.Builder
	if err := Write(&b, rs); err != nil {
		t.Fatal(err)
	}
	want := "✔ [east] crds: fine\n‼ [east] intermediate-ca: expires soon\n    fix: restart\n✘ [federation] clock-skew: off\n    fix: ntp\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	if !Failed(rs) || Failed(rs[:2]) {
		t.Error("Failed counts warnings or misses a failure")
	}
}

func TestProxyHoldingANACKFailsListingItsMessage(t *testing.T) {
	ps := debug.Proxies{Cluster: "east", Proxies: []server.ProxyStatus{
		{NodeID: "bookbuyer/ok", Types: []server.TypeStatus{{Type: "lds", Sent: "1", Acked: "1"}}},
		{NodeID: "bookbuyer/nack-provoker", Types: []server.TypeStatus{{Type: "lds", Sent: "2", NACK: &server.NACK{Version: "2", Message: "rejects every listener"}}}},
	}}
	r := proxyNACKs("east", ps, " --context east")
	if r.OK || !strings.Contains(r.Message, "bookbuyer/nack-provoker lds version 2: rejects every listener") || r.Fix != "`meshfed proxy status --context east` shows more" {
		t.Fatalf("got %+v", r)
	}
	ps.Proxies = ps.Proxies[:1]
	if r := proxyNACKs("east", ps, ""); !r.OK {
		t.Errorf("no NACK, got %+v", r)
	}
}
