// Package docs checks that meshfed's documentation says what the code
// does.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// metric is one metric as the code registers it or metrics.md lists it.
type metric struct {
	kind   string // counter, gauge, histogram
	labels string // label names, sorted, comma-separated
}

var (
	// prometheus.NewCounterVec(prometheus.CounterOpts{ Name: "meshfed_…", … }, []string{"a", "b"})
	registered = regexp.MustCompile(`prometheus\.New(Counter|Gauge|Histogram)(Vec)?\(prometheus\.\w+Opts\{\s*Name:\s*"(meshfed_\w+)"(?s:.*?)\}(?:, (?:nil|\[\]string\{([^}]*)\}))?\)`)
	// | `meshfed_…` | counter | `a`, `b` (…) | …
	documented = regexp.MustCompile("(?m)^\\| `(meshfed_\\w+)` \\| (\\w+) \\| ([^|]*)\\|")
	labelName  = regexp.MustCompile("`(\\w+)`(?: \\([^)]*\\))?")
)

func sortedLabels(names []string) string {
	slices.Sort(names)
	return strings.Join(names, ",")
}

// registeredMetrics reads every metric meshfed registers (name, type,
// labels) from its Go source, leaving out tests and the tests/ and tools/
// trees. It fails t if the pattern finds implausibly few, which means the
// code no longer registers metrics the way the pattern expects.
func registeredMetrics(t *testing.T) map[string]metric {
	t.Helper()
	code := map[string]metric{}
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "tests" || d.Name() == "tools" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range registered.FindAllStringSubmatch(string(src), -1) {
			var labels []string
			for _, l := range strings.Split(m[4], ",") {
				if l = strings.Trim(strings.TrimSpace(l), `"`); l != "" {
					labels = append(labels, l)
				}
			}
			code[m[3]] = metric{kind: strings.ToLower(m[1]), labels: sortedLabels(labels)}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(code) < 20 {
		t.Fatalf("found only %d metrics in the code; the pattern no longer matches how they are registered", len(code))
	}
	return code
}

// TestEveryMetricIsDocumented reads every metric the code registers
// (name, type, labels) from the source and compares it with
// docs/metrics.md, both ways.
func TestEveryMetricIsDocumented(t *testing.T) {
	code := registeredMetrics(t)
	page, err := os.ReadFile("metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]metric{}
	for _, m := range documented.FindAllStringSubmatch(string(page), -1) {
		var labels []string
		for _, l := range labelName.FindAllStringSubmatch(m[3], -1) {
			labels = append(labels, l[1])
		}
		docs[m[1]] = metric{kind: m[2], labels: sortedLabels(labels)}
	}
	for name, c := range code {
		d, ok := docs[name]
		switch {
		case !ok:
			t.Errorf("%s (%s, labels %q) is registered but not in docs/metrics.md", name, c.kind, c.labels)
		case d != c:
			t.Errorf("%s: the code registers a %s with labels %q, docs/metrics.md says a %s with %q", name, c.kind, c.labels, d.kind, d.labels)
		}
	}
	for name := range docs {
		if _, ok := code[name]; !ok {
			t.Errorf("docs/metrics.md lists %s, which no code registers", name)
		}
	}
}
