package docs

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// dashboardDir holds the Grafana dashboards meshfed ships.
const dashboardDir = "../deploy/dashboards"

// dashboard is the part of Grafana's dashboard JSON model these tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *datasourceRef `json:"datasource"`
	Targets     []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	// Panels are a collapsed row's; an open row's follow it in the
	// dashboard's own list.
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": "…"} for Prometheus
	Datasource *datasourceRef  `json:"datasource"`
}

// datasourceVar is how every panel must name its data source: the
// dashboard's own variable, so one import works with any Prometheus.
const datasourceVar = "${datasource}"

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// runtimeSeries are the client_golang Go and process collectors' series
// the dashboards may show; meshfed-controller serves them when
// controller/daemon registers those collectors.
var runtimeSeries = []string{"process_resident_memory_bytes", "process_cpu_seconds_total", "go_goroutines"}

// labelSet is the label names a series or an expression's result
// carries. A nil labelSet means unknown (an error was already reported);
// nothing is checked against it.
type labelSet map[string]bool

func newLabelSet(names ...string) labelSet {
	s := labelSet{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

// catalogue says which series the code produces and with which labels.
type catalogue map[string]labelSet

// servedSeries turns the registered metrics into the series a query can
// select: a counter or gauge by its name, a histogram by its _bucket
// (with le), _sum and _count series, each with the target labels.
func servedSeries(t *testing.T) catalogue {
	t.Helper()
	c := catalogue{}
	for name, m := range registeredMetrics(t) {
		var labels []string
		if m.labels != "" {
			labels = strings.Split(m.labels, ",")
		}
		labels = append(labels, targetLabels...)
		if m.kind != "histogram" {
			c[name] = newLabelSet(labels...)
			continue
		}
		c[name+"_bucket"] = newLabelSet(append(labels, "le")...)
		c[name+"_sum"] = newLabelSet(labels...)
		c[name+"_count"] = newLabelSet(labels...)
	}
	daemon, err := os.ReadFile("../controller/daemon/run.go")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(daemon), "collectors.NewGoCollector(") && strings.Contains(string(daemon), "collectors.NewProcessCollector(") {
		for _, name := range runtimeSeries {
			c[name] = newLabelSet(targetLabels...)
		}
	}
	return c
}

var (
	// Grafana's interval variables stand for a duration; they may sit in
	// a range, where PromQL wants one.
	grafanaInterval = regexp.MustCompile(`\$\{?__(?:rate_interval|interval|range)\}?`)
	// Any other variable is a label value, inside a quoted string.
	grafanaVariable = regexp.MustCompile(`\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\]`)
	// label_values(selector, label) in a query variable.
	labelValues = regexp.MustCompile(`^\s*label_values\((.+),\s*(\w+)\s*\)\s*$`)
)

// promQL is what Grafana sends Prometheus for expr, its variables
// replaced by values of the right shape.
func promQL(expr string) string {
	expr = grafanaInterval.ReplaceAllString(expr, "5m")
	return grafanaVariable.ReplaceAllString(expr, "x")
}

// queryCheck checks one PromQL expression against the catalogue: every
// series it selects is served, and every label it selects, groups or
// matches by is one the series under it carry.
type queryCheck struct {
	served   catalogue
	problems []string
	metrics  []string // series names selected
}

func (q *queryCheck) problem(format string, args ...any) {
	q.problems = append(q.problems, fmt.Sprintf(format, args...))
}

// need reports each of names that have does not hold, naming what uses it.
func (q *queryCheck) need(have labelSet, names []string, use string) {
	if have == nil {
		return
	}
	for _, n := range names {
		if !have[n] {
			q.problem("%s names label %q, which the series under it do not carry (they have %s)", use, n, strings.Join(slices.Sorted(maps.Keys(have)), ", "))
		}
	}
}

// labels returns the labels e's result carries, checking e on the way.
func (q *queryCheck) labels(e parser.Expr) labelSet {
	switch n := e.(type) {
	case *parser.VectorSelector:
		return q.selector(n)
	case *parser.MatrixSelector:
		return q.labels(n.VectorSelector)
	case *parser.SubqueryExpr:
		return q.labels(n.Expr)
	case *parser.ParenExpr:
		return q.labels(n.Expr)
	case *parser.UnaryExpr:
		return q.labels(n.Expr)
	case *parser.StepInvariantExpr:
		return q.labels(n.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return labelSet{}
	case *parser.AggregateExpr:
		return q.aggregate(n)
	case *parser.Call:
		return q.call(n)
	case *parser.BinaryExpr:
		return q.binary(n)
	}
	q.problem("unexpected PromQL node %T in %s", e, e)
	return nil
}

func (q *queryCheck) selector(n *parser.VectorSelector) labelSet {
	name := n.Name
	for _, m := range n.LabelMatchers {
		if m.Name == "__name__" && name == "" {
			name = m.Value
		}
	}
	if name == "" {
		q.problem("%s selects no metric by name", n)
		return nil
	}
	q.metrics = append(q.metrics, name)
	have, ok := q.served[name]
	if !ok {
		q.problem("%s is not a series meshfed-controller serves (a registered counter or gauge, or a histogram's _bucket, _sum or _count)", name)
		return nil
	}
	for _, m := range n.LabelMatchers {
		if m.Name != "__name__" && !have[m.Name] {
			q.problem("%s has no label %q (it has %s)", name, m.Name, strings.Join(slices.Sorted(maps.Keys(have)), ", "))
		}
	}
	return have
}

func (q *queryCheck) aggregate(n *parser.AggregateExpr) labelSet {
	in := q.labels(n.Expr)
	if n.Param != nil {
		q.labels(n.Param)
	}
	op := n.Op.String()
	if n.Without {
		q.need(in, n.Grouping, op+" without (…)")
	} else {
		q.need(in, n.Grouping, op+" by (…)")
	}
	switch n.Op {
	case parser.TOPK, parser.BOTTOMK, parser.LIMITK, parser.LIMIT_RATIO:
		return in // they keep the series they pick as they are
	}
	var out labelSet
	switch {
	case n.Without && in == nil:
		return nil
	case n.Without:
		out = maps.Clone(in)
		for _, l := range n.Grouping {
			delete(out, l)
		}
	default:
		out = newLabelSet(n.Grouping...)
	}
	if s, ok := n.Param.(*parser.StringLiteral); ok && n.Op == parser.COUNT_VALUES {
		out[s.Val] = true
	}
	return out
}

func (q *queryCheck) call(n *parser.Call) labelSet {
	args := make([]labelSet, len(n.Args))
	for i, a := range n.Args {
		args[i] = q.labels(a)
	}
	switch n.Func.Name {
	case "histogram_quantile":
		q.need(args[1], []string{"le"}, "histogram_quantile")
		if args[1] == nil {
			return nil
		}
		out := maps.Clone(args[1])
		delete(out, "le")
		return out
	case "label_replace", "label_join":
		if args[0] == nil {
			return nil
		}
		out := maps.Clone(args[0])
		if dst, ok := n.Args[1].(*parser.StringLiteral); ok {
			out[dst.Val] = true
		}
		return out
	}
	for i, a := range n.Args {
		if t := a.Type(); t == parser.ValueTypeVector || t == parser.ValueTypeMatrix {
			return args[i]
		}
	}
	return labelSet{}
}

func (q *queryCheck) binary(n *parser.BinaryExpr) labelSet {
	l, r := q.labels(n.LHS), q.labels(n.RHS)
	lv, rv := n.LHS.Type() == parser.ValueTypeVector, n.RHS.Type() == parser.ValueTypeVector
	switch {
	case !lv && !rv:
		return labelSet{}
	case !rv:
		return l
	case !lv:
		return r
	}
	vm := n.VectorMatching
	if vm == nil {
		return l
	}
	match := "ignoring (…)"
	if vm.On {
		match = "on (…)"
	}
	q.need(l, vm.MatchingLabels, match)
	q.need(r, vm.MatchingLabels, match)
	switch vm.Card {
	case parser.CardManyToOne:
		q.need(r, vm.Include, "group_left (…)")
		if l == nil {
			return nil
		}
		out := maps.Clone(l)
		for _, i := range vm.Include {
			out[i] = true
		}
		return out
	case parser.CardOneToMany:
		q.need(l, vm.Include, "group_right (…)")
		if r == nil {
			return nil
		}
		out := maps.Clone(r)
		for _, i := range vm.Include {
			out[i] = true
		}
		return out
	case parser.CardManyToMany: // and, or, unless
		return l
	}
	if l == nil {
		return nil
	}
	if vm.On {
		return newLabelSet(slices.DeleteFunc(slices.Clone(vm.MatchingLabels), func(s string) bool { return !l[s] })...)
	}
	out := maps.Clone(l)
	for _, m := range vm.MatchingLabels {
		delete(out, m)
	}
	return out
}

// check parses expr as Grafana would send it and checks it.
func (q *queryCheck) check(expr string) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(promQL(expr))
	if err != nil {
		q.problem("%q is not PromQL: %v", expr, err)
		return
	}
	q.labels(e)
}

// checkVariable checks a query variable's label_values(selector, label).
func (q *queryCheck) checkVariable(query string) {
	m := labelValues.FindStringSubmatch(query)
	if m == nil {
		q.problem("query %q: want label_values(selector, label)", query)
		return
	}
	e, err := parser.NewParser(parser.Options{}).ParseExpr(promQL(m[1]))
	if err != nil {
		q.problem("query %q: %q is not a PromQL selector: %v", query, m[1], err)
		return
	}
	q.need(q.labels(e), []string{m[2]}, "label_values")
}

// loadDashboards reads every dashboard under dashboardDir by file name.
func loadDashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dashboardDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no dashboards in %s", dashboardDir)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Errorf("%s: not a Grafana dashboard: %v", f, err)
			continue
		}
		out[filepath.Base(f)] = d
	}
	return out
}

// leafPanels returns d's panels that show data, collapsed rows' included.
func leafPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		if p.Type == "row" {
			out = append(out, leafPanels(p.Panels)...)
			continue
		}
		out = append(out, p)
	}
	return out
}

// TestDashboardsQueryWhatTheCodeServes loads every dashboard in
// deploy/dashboards and checks that it is a Grafana dashboard meshfed
// users can import as it is, and that every query in it selects series
// meshfed-controller serves, by labels those series carry.
func TestDashboardsQueryWhatTheCodeServes(t *testing.T) {
	served := servedSeries(t)
	uids := map[string]string{}
	for file, d := range loadDashboards(t) {
		t.Run(file, func(t *testing.T) {
			if d.UID == "" || d.Title == "" {
				t.Errorf("uid %q, title %q: a dashboard needs both", d.UID, d.Title)
			}
			if other, ok := uids[d.UID]; ok {
				t.Errorf("uid %q is also %s's", d.UID, other)
			}
			uids[d.UID] = file
			if d.SchemaVersion < 36 {
				t.Errorf("schemaVersion %d: want 36 or later (data sources referred to by uid)", d.SchemaVersion)
			}
			q := &queryCheck{served: served}
			hasDatasource := false
			for _, v := range d.Templating.List {
				switch v.Type {
				case "datasource":
					hasDatasource = hasDatasource || (v.Name == "datasource" && string(v.Query) == `"prometheus"`)
				case "query":
					var query struct {
						Query string `json:"query"`
					}
					if err := json.Unmarshal(v.Query, &query); err != nil {
						if err := json.Unmarshal(v.Query, &query.Query); err != nil {
							t.Errorf("variable %s: query %s: %v", v.Name, v.Query, err)
							continue
						}
					}
					q.checkVariable(query.Query)
					for _, p := range q.problems {
						t.Errorf("variable %s: %s", v.Name, p)
					}
					q.problems = nil
				}
			}
			if !hasDatasource {
				t.Errorf("no Prometheus data source variable named datasource; panels must use %s", datasourceVar)
			}
			panels := leafPanels(d.Panels)
			if len(panels) == 0 {
				t.Fatal("no panels")
			}
			ids := map[int]bool{}
			for _, p := range panels {
				name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
				if ids[p.ID] {
					t.Errorf("%s: id %d used twice", name, p.ID)
				}
				ids[p.ID] = true
				if strings.TrimSpace(p.Title) == "" || strings.TrimSpace(p.Description) == "" {
					t.Errorf("%s: needs a title and a description saying what it shows", name)
				}
				if p.Datasource == nil || p.Datasource.UID != datasourceVar {
					t.Errorf("%s: data source %+v, want uid %s", name, p.Datasource, datasourceVar)
				}
				if len(p.Targets) == 0 {
					t.Errorf("%s: no queries", name)
				}
				for _, tg := range p.Targets {
					if tg.Datasource != nil && tg.Datasource.UID != datasourceVar {
						t.Errorf("%s, query %s: data source %+v, want uid %s", name, tg.RefID, tg.Datasource, datasourceVar)
					}
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("%s, query %s: no expr", name, tg.RefID)
						continue
					}
					q.check(tg.Expr)
					for _, p := range q.problems {
						t.Errorf("%s, query %s: %s", name, tg.RefID, p)
					}
					q.problems = nil
				}
			}
			if len(q.metrics) == 0 {
				t.Error("names no metric at all")
			}
		})
	}
}

// TestDashboardsShowEveryMetric fails when a metric the code registers
// appears on no dashboard: adding a metric means deciding where users
// see it.
func TestDashboardsShowEveryMetric(t *testing.T) {
	q := &queryCheck{served: servedSeries(t)}
	for _, d := range loadDashboards(t) {
		for _, p := range leafPanels(d.Panels) {
			for _, tg := range p.Targets {
				q.check(tg.Expr)
			}
		}
	}
	shown := newLabelSet(q.metrics...)
	for name, m := range registeredMetrics(t) {
		if !shown[name] && !(m.kind == "histogram" && (shown[name+"_bucket"] || shown[name+"_sum"] || shown[name+"_count"])) {
			t.Errorf("%s (%s) is on no dashboard in deploy/dashboards", name, m.kind)
		}
	}
}

// TestQueryCheckCatchesWhatDashboardsGetWrong pins the mistakes the
// dashboard check must catch, and the queries it must let through.
func TestQueryCheckCatchesWhatDashboardsGetWrong(t *testing.T) {
	served := servedSeries(t)
	for _, c := range []struct {
		name, expr string
		want       string // in the one problem reported; "" for none
	}{
		{"counter rate by its label", `sum by (type) (rate(meshfed_xds_pushes_total{job=~"$job"}[$__rate_interval]))`, ""},
		{"quantile over buckets by le", `histogram_quantile(0.99, sum by (le, type) (rate(meshfed_xds_push_ack_seconds_bucket[5m])))`, ""},
		{"mean from sum and count", `sum(rate(meshfed_xds_push_ack_seconds_sum[5m])) / sum(rate(meshfed_xds_push_ack_seconds_count[5m]))`, ""},
		{"count_values adds its label", `count by (cluster) (count_values by (cluster) ("version", meshfed_federation_catalog_version))`, ""},
		{"label_replace adds its label", `sum by (peer) (label_replace(meshfed_federation_catalog_version, "peer", "$1", "cluster", "(.*)"))`, ""},
		{"group_left takes a label of the one side", `meshfed_federate_remote_services_invalid * on (cluster) group_left (job) meshfed_federation_withdrawn_services`, ""},
		{"misspelt metric", `rate(meshfed_xds_nack_total[5m])`, "meshfed_xds_nack_total is not a series"},
		{"histogram by its own name", `rate(meshfed_xds_push_ack_seconds[5m])`, "meshfed_xds_push_ack_seconds is not a series"},
		{"counter without its _total", `rate(meshfed_xds_pushes[5m])`, "meshfed_xds_pushes is not a series"},
		{"bucket of a counter", `rate(meshfed_xds_pushes_total_bucket[5m])`, "is not a series"},
		{"matcher on a label the metric lacks", `meshfed_federation_members{status="dead"}`, `has no label "status"`},
		{"le on a histogram's count", `meshfed_xds_push_ack_seconds_count{le="1"}`, `has no label "le"`},
		{"by a label the metric lacks", `sum by (kind) (rate(meshfed_xds_pushes_total[5m]))`, `names label "kind"`},
		{"by a label aggregated away below", `sum by (type) (sum(rate(meshfed_xds_pushes_total[5m])))`, `names label "type"`},
		{"quantile without le", `histogram_quantile(0.5, sum by (type) (rate(meshfed_xds_push_ack_seconds_bucket[5m])))`, `histogram_quantile names label "le"`},
		{"on a label one side lacks", `meshfed_xds_pushes_total / on (type) meshfed_controller_rejected_objects`, `on (…) names label "type"`},
		{"not PromQL", `sum by (type) (rate(meshfed_xds_pushes_total[5m])`, "is not PromQL"},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := &queryCheck{served: served}
			q.check(c.expr)
			switch {
			case c.want == "" && len(q.problems) > 0:
				t.Errorf("%s: %q", c.expr, q.problems)
			case c.want != "" && (len(q.problems) != 1 || !strings.Contains(q.problems[0], c.want)):
				t.Errorf("%s: got %q, want one problem with %q", c.expr, q.problems, c.want)
			}
		})
	}
}
