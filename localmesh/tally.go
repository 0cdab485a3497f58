package localmesh

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Tally is what one source's calls of one method did in a time window.
type Tally struct {
	Total   int
	By      map[Outcome]int
	Answers int // answered by a bookstore
	Denied  int // PermissionDenied
	Failed  int // neither answered nor denied
}

// Tally counts source's calls of method between from and to.
func (s *Stats) Tally(source, method string, from, to time.Time) Tally {
	t := Tally{By: map[Outcome]int{}}
	for k, n := range s.Count(from, to) {
		if k.Source != source || k.Method != method {
			continue
		}
		t.Total += n
		t.By[k.Outcome] += n
		switch {
		case k.Outcome.OK:
			t.Answers += n
		case k.Outcome.Code == "PermissionDenied":
			t.Denied += n
		default:
			t.Failed += n
		}
	}
	return t
}

// Recent counts source's calls of method in the last span before now.
func (s *Stats) Recent(now time.Time, span time.Duration, source, method string) Tally {
	return s.Tally(source, method, now.Add(-span), now)
}

// AnsweredIn counts the answers given by cluster.
func (t Tally) AnsweredIn(cluster string) int {
	n := 0
	for o, c := range t.By {
		if o.OK && o.Cluster == cluster {
			n += c
		}
	}
	return n
}

// WaitUntil polls cond every 250 ms until it holds or limit passes; the
// error then carries the last state cond described.
func WaitUntil(ctx context.Context, limit time.Duration, what string, cond func(now time.Time) (bool, string)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond(time.Now())
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s; last seen: %s", what, limit, state)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w; last seen: %s", what, ctx.Err(), state)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Share is the share of want among t's answers, with the tolerance the
// check allows: five standard deviations of a binomial sample of that size
// around p (a false alarm about once in 1.7 million runs).
func (t Tally) Share(want Outcome, p float64) (got, tol float64) {
	if t.Answers == 0 {
		return 0, 1
	}
	return float64(t.By[want]) / float64(t.Answers), 5 * math.Sqrt(p*(1-p)/float64(t.Answers))
}

// CheckShare checks that the share of want among t's answers is p within
// the binomial tolerance of Share, on at least 50 answers, and describes
// the outcome either way.
func (t Tally) CheckShare(what string, want Outcome, p float64) (string, error) {
	if t.Answers < 50 {
		return "", fmt.Errorf("%s: only %d answers in the sample", what, t.Answers)
	}
	got, tol := t.Share(want, p)
	msg := fmt.Sprintf("%s: %.1f%% of %d answers (want %.0f%% ± %.1f%%)", what, 100*got, t.Answers, 100*p, 100*tol)
	if math.Abs(got-p) > tol {
		return "", fmt.Errorf("%s", msg)
	}
	return msg, nil
}

// Sleep waits for d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
