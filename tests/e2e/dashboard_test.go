package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The web view `meshfed dashboard` opens, loaded in a real headless
// Chromium: it shows the split weights in force and follows a change of
// the TrafficSplit without being reloaded.
func TestDashboardFollowsASplitChangeInABrowser(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("the web view's test needs a headless Chromium (Debian package chromium; .ci/run installs it): chromium is not on PATH")
	}
	m := startBookstoreMesh(t)
	m.apply(t, "access", "split/bookstore-80-20.yaml")

	// meshfed dashboard, as a user runs it: it port-forwards through the
	// API server and prints the URL.
	cmd := exec.Command(m.h.MeshfedPath(), "dashboard", "--kubeconfig", m.east.Kubeconfig)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u := regexp.MustCompile(`http://127\.0\.0\.1:\d+/`).FindString(sc.Text()); u != "" {
				urls <- u
			}
		}
	}()
	var url string
	select {
	case url = <-urls:
	case <-time.After(converge):
		t.Fatal("meshfed dashboard printed no URL")
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	bctx, cancel = context.WithTimeout(bctx, 5*time.Minute)
	defer cancel()
	if _, err := chromedp.Run(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("load %s in Chromium: %v", url, err)
	}
	weight := func(backend string) string {
		js := fmt.Sprintf(`(document.querySelector('tr[data-split="bookstore/bookstore-split"][data-backend=%q]') || {dataset: {}}).dataset.weight || ""`, backend)
		w, err := chromedp.Run(bctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	waitWeights := func(v1, v2 string) {
		t.Helper()
		m.wait(t, converge, "the page shows bookstore-v1 "+v1+", bookstore-v2 "+v2, func() error {
			if a, b := weight("bookstore-v1"), weight("bookstore-v2"); a != v1 || b != v2 {
				return fmt.Errorf("the page shows %q/%q", a, b)
			}
			return nil
		})
	}
	waitWeights("80", "20")
	text, err := chromedp.Run(bctx, chromedp.Text("body"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the web view:\n%s", text)

	// The split changes in the API server; the same page, not reloaded,
	// follows.
	m.apply(t, "split/bookstore-50-50.yaml")
	waitWeights("50", "50")
}
