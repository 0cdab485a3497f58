package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshfed/meshfed/localmesh"
)

// The sources and outcomes the checks look at.
var (
	bookbuyer = localmesh.SourceLabel("bookbuyer", "east")
	bookthief = localmesh.SourceLabel("bookthief", "east")
	v1East    = localmesh.Outcome{OK: true, Version: "v1", Cluster: "east"}
)

// waitUntil polls cond until it holds or limit passes, and says so.
func (e *env) waitUntil(ctx context.Context, limit time.Duration, what string, cond func(now time.Time) (bool, string)) error {
	if err := localmesh.WaitUntil(ctx, limit, what, cond); err != nil {
		return err
	}
	e.say("ok: %s", what)
	return nil
}

// check runs the demo's scenario unattended: the split across clusters
// follows its weights, bookthief is denied and bookbuyer allowed, a split
// change moves traffic without failed RPCs, meshfed raises no Warning
// Event about the demo's objects, and when west is lost its share moves to
// east.
func (e *env) check(ctx context.Context) error {
	var errs []error
	fail := func(err error) {
		if err != nil {
			e.say("MISS: %v", err)
			errs = append(errs, err)
		}
	}
	stats := e.h.Stats()
	v2West := e.v2West()
	recent := func(now time.Time, src, method string) localmesh.Tally {
		return stats.Recent(now, 2*time.Second, src, method)
	}

	// 1. Both clusters answer bookbuyer: federation, export and split
	// work. Each client is sent the imported service on its own xDS
	// stream, so bookthief may learn west's endpoints a moment after
	// bookbuyer: the samples start once bookthief's RPCs, half of which
	// go to west, are all refused by policy rather than failing.
	if err := e.waitUntil(ctx, 3*time.Minute, "bookbuyer in east reaches bookstore-v1 in east and "+v2West.String(), func(now time.Time) (bool, string) {
		t := recent(now, bookbuyer, "BuyBook")
		th := recent(now, bookthief, "BuyBook")
		return t.By[v1East] > 0 && t.By[v2West] > 0 && th.Total > 0 && th.Denied == th.Total, fmt.Sprint(t.By, " bookthief ", th.By)
	}); err != nil {
		return err // nothing else can be checked
	}

	// 2. 50/50 split over a 10 s sample.
	from := time.Now()
	localmesh.Sleep(ctx, 10*time.Second)
	t := stats.Tally(bookbuyer, "BuyBook", from, time.Now())
	if msg, err := t.CheckShare("bookbuyer BuyBook to bookstore-v2 in west under the 50/50 split", v2West, 0.5); err != nil {
		fail(err)
	} else {
		e.say("ok: %s", msg)
	}
	if t.Failed > 0 {
		fail(fmt.Errorf("bookbuyer had %d failed BuyBook RPCs under the 50/50 split: %v", t.Failed, t.By))
	}
	lb := stats.Tally(bookbuyer, "ListBooks", from, time.Now())
	if lb.Total == 0 || lb.Denied != lb.Total {
		fail(fmt.Errorf("bookbuyer ListBooks (not in the route group) should all be denied: %v", lb.By))
	} else {
		e.say("ok: bookbuyer's ListBooks denied (%d of %d), only BuyBook is allowed", lb.Denied, lb.Total)
	}
	th := stats.Tally(bookthief, "BuyBook", from, time.Now())
	if th.Total == 0 || th.Denied != th.Total {
		fail(fmt.Errorf("bookthief should be denied everywhere: %v", th.By))
	} else {
		e.say("ok: bookthief denied (%d of %d RPCs)", th.Denied, th.Total)
	}

	// 3. Move everything to west: no failed RPCs on the way.
	changed := time.Now()
	fail(e.h.Apply(ctx, "east", "split/bookstore-0-100.yaml"))
	fail(e.waitUntil(ctx, 30*time.Second, "split 0/100: all of bookbuyer's RPCs go to west", func(now time.Time) (bool, string) {
		t := recent(now, bookbuyer, "BuyBook")
		return t.Total > 5 && t.By[v2West] == t.Total, fmt.Sprint(t.By)
	}))
	if moved := stats.Tally(bookbuyer, "BuyBook", changed, time.Now()); moved.Failed > 0 {
		fail(fmt.Errorf("%d failed RPCs while the split moved to 0/100: %v", moved.Failed, moved.By))
	} else {
		e.say("ok: no failed RPCs while the split moved (%d RPCs)", moved.Total)
	}
	fail(e.h.Apply(ctx, "east", "split/bookstore-50-50.yaml"))
	fail(e.waitUntil(ctx, 30*time.Second, "split back to 50/50", func(now time.Time) (bool, string) {
		t := recent(now, bookbuyer, "BuyBook")
		return t.By[v1East] > 0 && t.By[v2West] > 0, fmt.Sprint(t.By)
	}))

	// 4. meshfed has no complaint about the demo's objects: in a healthy
	// federation no Warning Event stands on any of them (what is in
	// force must not be reported missing).
	fail(e.checkNoWarnings(ctx))

	// 5. West is lost (its controller and workloads stop): once its
	// endpoints are withdrawn, every RPC is answered in east.
	e.say("stopping west: its controller and its bookstore-v2")
	e.h.StopController("west")
	e.h.StopWorkloads("west")
	lost := time.Now()
	fail(e.waitUntil(ctx, time.Minute, "west lost: bookbuyer's RPCs all answered by east", func(now time.Time) (bool, string) {
		t := recent(now, bookbuyer, "BuyBook")
		return t.Total > 5 && t.By[v1East] == t.Total, fmt.Sprint(t.By)
	}))
	during := stats.Tally(bookbuyer, "BuyBook", lost, time.Now())
	e.say("while west was being withdrawn: %d RPCs, %d failed (bounded by the withdraw deadline)", during.Total, during.Failed)

	if len(errs) > 0 {
		return fmt.Errorf("demo check: %d expectation(s) missed: %w", len(errs), errors.Join(errs...))
	}
	e.say("all checks passed")
	return nil
}

// meshfedComponent is the source of the Events meshfed-controller records.
const meshfedComponent = "meshfed-controller"

// checkNoWarnings fails on any Warning Event meshfed put on an object in
// either cluster.
func (e *env) checkNoWarnings(ctx context.Context) error {
	var found []string
	for _, cluster := range e.h.Clusters() {
		out, err := e.h.KubectlOutput(ctx, cluster, "get", "events", "--all-namespaces", "-o", "json")
		if err != nil {
			return err
		}
		var list struct {
			Items []struct {
				Type, Reason, Message string
				Source                struct{ Component string }
				ReportingComponent    string `json:"reportingComponent"`
				InvolvedObject        struct{ Kind, Namespace, Name string }
			}
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return fmt.Errorf("reading the events of %s: %w", cluster, err)
		}
		for _, ev := range list.Items {
			if ev.Type != "Warning" || (ev.Source.Component != meshfedComponent && ev.ReportingComponent != meshfedComponent) {
				continue
			}
			o := ev.InvolvedObject
			found = append(found, fmt.Sprintf("%s: %s %s/%s: %s: %s", cluster, o.Kind, o.Namespace, o.Name, ev.Reason, ev.Message))
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("meshfed Warning Events in a healthy demo:\n  %s", strings.Join(found, "\n  "))
	}
	e.say("ok: no meshfed Warning Event on the demo's objects")
	return nil
}
