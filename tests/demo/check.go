package demo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// The sources and outcomes the checks look at.
var (
	bookbuyer = SourceLabel("bookbuyer", "east")
	bookthief = SourceLabel("bookthief", "east")
	v1East    = Outcome{OK: true, Version: "v1", Cluster: "east"}
	v2West    = Outcome{OK: true, Version: "v2", Cluster: "west"}
)

// tally is what one source's calls of one method did in a time window.
type tally struct {
	total   int
	by      map[Outcome]int
	failed  int // neither answered nor denied
	denied  int
	answers int
}

func (e *env) tally(source, method string, from, to time.Time) tally {
	t := tally{by: map[Outcome]int{}}
	for k, n := range e.stats.Count(from, to) {
		if k.Source != source || k.Method != method {
			continue
		}
		t.total += n
		t.by[k.Outcome] += n
		switch {
		case k.Outcome.OK:
			t.answers += n
		case k.Outcome.Code == "PermissionDenied":
			t.denied += n
		default:
			t.failed += n
		}
	}
	return t
}

// waitUntil polls cond over a sliding window of the last span until it
// holds or limit passes.
func (e *env) waitUntil(ctx context.Context, limit time.Duration, what string, cond func(now time.Time) (bool, string)) error {
	deadline := time.Now().Add(limit)
	last := ""
	for {
		ok, state := cond(time.Now())
		if ok {
			e.say("ok: %s", what)
			return nil
		}
		last = state
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s; last seen: %s", what, limit, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// check runs the demo's scenario unattended: the split across clusters
// follows its weights, bookthief is denied and bookbuyer allowed, a split
// change moves traffic without failed RPCs, and when west is lost its share
// moves to east.
func (e *env) check(ctx context.Context) error {
	var errs []error
	fail := func(err error) {
		if err != nil {
			e.say("MISS: %v", err)
			errs = append(errs, err)
		}
	}
	recent := func(now time.Time, src, method string) tally {
		return e.tally(src, method, now.Add(-2*time.Second), now)
	}

	// 1. Both clusters answer bookbuyer: federation, export and split work.
	if err := e.waitUntil(ctx, 3*time.Minute, "bookbuyer in east reaches bookstore-v1 in east and bookstore-v2 in west", func(now time.Time) (bool, string) {
		t := recent(now, bookbuyer, "BuyBook")
		return t.by[v1East] > 0 && t.by[v2West] > 0, fmt.Sprint(t.by)
	}); err != nil {
		return err // nothing else can be checked
	}

	// 2. 50/50 split over a 10 s sample.
	from := time.Now()
	sleep(ctx, 10*time.Second)
	t := e.tally(bookbuyer, "BuyBook", from, time.Now())
	fail(e.checkShare("bookbuyer BuyBook to bookstore-v2 in west under the 50/50 split", t, v2West, 0.5))
	if t.failed > 0 {
		fail(fmt.Errorf("bookbuyer had %d failed BuyBook RPCs under the 50/50 split: %v", t.failed, t.by))
	}
	lb := e.tally(bookbuyer, "ListBooks", from, time.Now())
	if lb.total == 0 || lb.denied != lb.total {
		fail(fmt.Errorf("bookbuyer ListBooks (not in the route group) should all be denied: %v", lb.by))
	} else {
		e.say("ok: bookbuyer's ListBooks denied (%d of %d), only BuyBook is allowed", lb.denied, lb.total)
	}
	th := e.tally(bookthief, "BuyBook", from, time.Now())
	if th.total == 0 || th.denied != th.total {
		fail(fmt.Errorf("bookthief should be denied everywhere: %v", th.by))
	} else {
		e.say("ok: bookthief denied (%d of %d RPCs)", th.denied, th.total)
	}

	// 3. Move everything to west: no failed RPCs on the way.
	east := e.clusters["east"]
	changed := time.Now()
	fail(e.kubectl(ctx, east, "apply", "-f", e.manifest("split/bookstore-0-100.yaml")))
	fail(e.waitUntil(ctx, 30*time.Second, "split 0/100: all of bookbuyer's RPCs go to west", func(now time.Time) (bool, string) {
		t := recent(now, bookbuyer, "BuyBook")
		return t.total > 5 && t.by[v2West] == t.total, fmt.Sprint(t.by)
	}))
	if moved := e.tally(bookbuyer, "BuyBook", changed, time.Now()); moved.failed > 0 {
		fail(fmt.Errorf("%d failed RPCs while the split moved to 0/100: %v", moved.failed, moved.by))
	} else {
		e.say("ok: no failed RPCs while the split moved (%d RPCs)", moved.total)
	}
	fail(e.kubectl(ctx, east, "apply", "-f", e.manifest("split/bookstore-50-50.yaml")))
	fail(e.waitUntil(ctx, 30*time.Second, "split back to 50/50", func(now time.Time) (bool, string) {
		t := recent(now, bookbuyer, "BuyBook")
		return t.by[v1East] > 0 && t.by[v2West] > 0, fmt.Sprint(t.by)
	}))

	// 4. West is lost (its controller and workloads stop): once its
	// endpoints are withdrawn, every RPC is answered in east.
	west := e.clusters["west"]
	e.say("stopping west: its controller and its bookstore-v2")
	e.stopController(west)
	e.runner.StopCluster("west")
	lost := time.Now()
	fail(e.waitUntil(ctx, time.Minute, "west lost: bookbuyer's RPCs all answered by east", func(now time.Time) (bool, string) {
		t := recent(now, bookbuyer, "BuyBook")
		return t.total > 5 && t.by[v1East] == t.total, fmt.Sprint(t.by)
	}))
	during := e.tally(bookbuyer, "BuyBook", lost, time.Now())
	e.say("while west was being withdrawn: %d RPCs, %d failed (bounded by the withdraw deadline)", during.total, during.failed)

	if len(errs) > 0 {
		return fmt.Errorf("demo check: %d expectation(s) missed: %w", len(errs), errors.Join(errs...))
	}
	e.say("all checks passed")
	return nil
}

// checkShare checks that the share of want among t's answers is within
// five standard deviations of p (a binomial sample), and says so.
func (e *env) checkShare(what string, t tally, want Outcome, p float64) error {
	if t.answers < 50 {
		return fmt.Errorf("%s: only %d answers in the sample", what, t.answers)
	}
	got := float64(t.by[want]) / float64(t.answers)
	tol := 5 * math.Sqrt(p*(1-p)/float64(t.answers))
	if math.Abs(got-p) > tol {
		return fmt.Errorf("%s: %.1f%% of %d answers, want %.0f%% ± %.1f%%", what, 100*got, t.answers, 100*p, 100*tol)
	}
	e.say("ok: %s: %.1f%% of %d answers (want %.0f%% ± %.1f%%)", what, 100*got, t.answers, 100*p, 100*tol)
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
