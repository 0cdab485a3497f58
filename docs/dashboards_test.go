package docs

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// A dashboard as far as the check needs it: panels (rows nest theirs)
// and their queries.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

var (
	// A metric name in a query: meshfed's own.
	metricRef = regexp.MustCompile(`\bmeshfed_\w+`)
	// A selector's label matchers: name{a="x", b=~"y"}.
	selector = regexp.MustCompile(`(meshfed_\w+)\{([^}]*)\}`)
	matcher  = regexp.MustCompile(`(\w+)\s*(?:=~|!~|!=|=)`)
	// An aggregation's grouping: by (a, b).
	grouping = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
)

// Labels every series has from Prometheus' scrape, and le on buckets.
var targetLabels = []string{"job", "instance"}

// TestDashboardsQueryOnlyRegisteredMetrics loads every dashboard in
// deploy/dashboards and checks each panel's queries against the metrics
// the code registers: every meshfed_ name is one (with _bucket, _sum,
// _count only on histograms), every label it matches or groups by is one
// of that metric's labels or a scrape label.
func TestDashboardsQueryOnlyRegisteredMetrics(t *testing.T) {
	code := registeredMetrics(t)
	files, err := filepath.Glob("../deploy/dashboards/*.json")
	if err != nil || len(files) < 2 {
		t.Fatalf("want the control plane and federation dashboards in deploy/dashboards, found %v (%v)", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: not JSON: %v", f, err)
		}
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
			t.Errorf("%s: a dashboard needs a uid, a title and panels", f)
		}
		named := 0
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				walk(p.Panels)
				for _, tg := range p.Targets {
					named += checkQuery(t, f, p.Title, tg.Expr, code)
				}
			}
		}
		walk(d.Panels)
		if named == 0 {
			t.Errorf("%s queries no meshfed metric", f)
		}
	}
}

// checkQuery checks one query and returns how many metric names it uses.
func checkQuery(t *testing.T, file, panelTitle, expr string, code map[string]metric) int {
	t.Helper()
	where := filepath.Base(file) + ", panel " + panelTitle
	resolve := func(name string) (metric, bool, bool) {
		if m, ok := code[name]; ok {
			return m, false, true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				if m, ok := code[base]; ok && m.kind == "histogram" {
					return m, suffix == "_bucket", true
				}
			}
		}
		return metric{}, false, false
	}
	names := metricRef.FindAllString(expr, -1)
	var known []string // labels of the query's metrics
	for _, name := range names {
		m, bucket, ok := resolve(name)
		if !ok {
			t.Errorf("%s: %s is not a metric the code registers (query %q)", where, name, expr)
			continue
		}
		known = append(known, strings.Split(m.labels, ",")...)
		if bucket {
			known = append(known, "le")
		}
	}
	allowed := func(l string) bool { return slices.Contains(known, l) || slices.Contains(targetLabels, l) }
	for _, s := range selector.FindAllStringSubmatch(expr, -1) {
		m, bucket, ok := resolve(s[1])
		if !ok {
			continue
		}
		for _, mt := range matcher.FindAllStringSubmatch(s[2], -1) {
			if l := mt[1]; !slices.Contains(strings.Split(m.labels, ","), l) && !slices.Contains(targetLabels, l) && (!bucket || l != "le") {
				t.Errorf("%s: %s has no label %s (query %q)", where, s[1], l, expr)
			}
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !allowed(l) {
				t.Errorf("%s: grouping by %s, which none of the query's metrics has (query %q)", where, l, expr)
			}
		}
	}
	return len(names)
}
