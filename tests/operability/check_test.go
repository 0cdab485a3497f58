package operability

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshfed/meshfed/controller/debug"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/check"
	"github.com/meshfed/meshfed/localmesh"
	"github.com/meshfed/meshfed/tests/internal/suite"
	"github.com/meshfed/meshfed/trust/ca"
)

// mergedKubeconfig writes one kubeconfig with a context per cluster, named
// for the cluster, as a user with several clusters has.
func mergedKubeconfig(t *testing.T, h *localmesh.Harness) string {
	t.Helper()
	merged := clientcmdapi.NewConfig()
	for _, name := range h.Clusters() {
		cfg, err := clientcmd.LoadFromFile(h.Cluster(name).Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		kctx := cfg.Contexts[cfg.CurrentContext]
		if kctx == nil {
			t.Fatalf("%s's kubeconfig has no current context", name)
		}
		merged.Clusters[name] = cfg.Clusters[kctx.Cluster]
		merged.AuthInfos[name] = cfg.AuthInfos[kctx.AuthInfo]
		merged.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: kctx.Namespace}
	}
	merged.CurrentContext = h.Clusters()[0]
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*merged, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCheck runs `meshfed check --contexts east,west` and returns its
// output and exit code.
func runCheck(ctx context.Context, t *testing.T, h *localmesh.Harness, kubeconfig string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, h.MeshfedPath(), "check", "--kubeconfig", kubeconfig, "--contexts", strings.Join(h.Clusters(), ","))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("meshfed check: %v: %s", err, out)
	return "", 0
}

// `meshfed check` on a healthy federation passes every check; after
// west's controller is lost and west's published trust bundle names
// another root, it fails, naming the clusters and the commands that fix
// each problem.
func TestCheckPassesOnAHealthyFederationAndNamesTheFixOfEachProblem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	h := suite.Start(ctx, t, localmesh.Config{Clusters: []string{"east", "west"}, Namespaces: []string{"bookstore"}})
	kubeconfig := mergedKubeconfig(t, h)

	var out string
	var code int
	err := localmesh.WaitUntil(ctx, 2*time.Minute, "meshfed check passes", func(time.Time) (bool, string) {
		out, code = runCheck(ctx, t, h, kubeconfig)
		return code == 0, out
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "✔ ") {
			t.Errorf("healthy federation, a line that is not ✔: %q", line)
		}
	}
	for _, want := range []string{"[east] crds", "[west] controller", "[west] intermediate-ca", "[east] debug-api", "[federation] trust-bundles", "[federation] members-alive", "[west] clock-skew"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q line in:\n%s", want, out)
		}
	}
	t.Logf("healthy:\n%s", out)

	// proxy status --all-clusters asks every context's controller.
	js, err := exec.CommandContext(ctx, h.MeshfedPath(), "proxy", "status", "--all-clusters", "-o", "json", "--kubeconfig", kubeconfig).Output()
	var all []debug.Proxies
	if err != nil || json.Unmarshal(js, &all) != nil || len(all) != 2 || all[0].Cluster != "east" || all[1].Cluster != "west" {
		t.Errorf("proxy status --all-clusters: want east's and west's answers: %v\n%s", err, js)
	}

	// West loses its controller (so nothing republishes its bundle), and
	// its published bundle is replaced by another root's.
	h.StopController("west")
	other, err := ca.GenerateRoot(spiffeid.RequireTrustDomainFromString(deploy.DefaultTrustDomain), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cms := h.Cluster("west").Sandbox.Client().CoreV1().ConfigMaps(deploy.DefaultNamespace)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: deploy.BundleConfigMapName, Namespace: deploy.DefaultNamespace},
		Data: map[string]string{ca.BundleKey: string(other.CertificatePEM())}}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}

	out, code = runCheck(ctx, t, h, kubeconfig)
	t.Logf("broken:\n%s", out)
	if code == 0 {
		t.Fatalf("meshfed check exits 0 with west's bundle replaced and its controller down:\n%s", out)
	}
	lines := strings.Split(out, "\n")
	find := func(prefix string) (string, string) {
		for i, l := range lines {
			if strings.HasPrefix(l, prefix) && i+1 < len(lines) {
				return l, lines[i+1]
			}
		}
		t.Errorf("no line starting %q in:\n%s", prefix, out)
		return "", ""
	}
	bundle, bundleFix := find("✘ [west] trust-bundles:")
	if !strings.Contains(bundle, "east") || !strings.Contains(bundle, ca.Fingerprint(other.Certificate)) {
		t.Errorf("the bundle failure does not name east and west's root: %q", bundle)
	}
	if !strings.Contains(bundleFix, "fix: `meshfed certificate status --contexts east,west`") ||
		!strings.Contains(bundleFix, "`kubectl --context west -n meshfed-system rollout restart deploy/meshfed-controller`") {
		t.Errorf("bundle fix: %q", bundleFix)
	}
	_, debugFix := find("✘ [west] debug-api:")
	if !strings.Contains(debugFix, "`kubectl --context west -n meshfed-system rollout restart deploy/meshfed-controller`") {
		t.Errorf("debug API fix: %q", debugFix)
	}
	if !strings.Contains(out, "✔ [east] debug-api") {
		t.Errorf("east's debug API is reported down too:\n%s", out)
	}

	cmd := exec.CommandContext(ctx, h.MeshfedPath(), "check", "-o", "json", "--kubeconfig", kubeconfig, "--contexts", "east,west")
	js, err = cmd.Output() // stdout only: client-go logs to stderr
	if err == nil {
		t.Errorf("meshfed check -o json exits 0 with west broken")
	}
	var results []check.Result
	if err := json.Unmarshal(js, &results); err != nil {
		t.Fatalf("-o json: %v: %s", err, js)
	}
	found := false
	for _, r := range results {
		if r.Cluster == "west" && r.Check == "trust-bundles" && !r.OK && r.Severity == check.SeverityError && strings.Contains(r.Fix, "meshfed certificate status") {
			found = true
		}
	}
	if !found {
		t.Errorf("-o json has no failed trust-bundles result for west with its fix: %s", js)
	}
}
