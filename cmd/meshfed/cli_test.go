package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/sandbox"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestInstallDryRunPrintsManifests(t *testing.T) {
	out, err := run(t, "install", "--cluster-name", "east", "--dry-run", "--enable-permissive-traffic-policy")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := deploy.Decode([]byte(out))
	if err != nil {
		t.Fatalf("dry-run output is not YAML: %v", err)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
	}
	if kinds["CustomResourceDefinition"] != 7 || kinds["Deployment"] != 1 || kinds["MeshConfig"] != 1 || kinds["MutatingWebhookConfiguration"] != 1 {
		t.Errorf("dry-run printed %v; want 7 CRDs, a Deployment, a MeshConfig and the injector's webhook", kinds)
	}
	if !strings.Contains(out, "enablePermissiveTrafficPolicyMode: true") {
		t.Error("dry-run MeshConfig does not carry --enable-permissive-traffic-policy")
	}
}

func TestInstallWithoutClusterNameFails(t *testing.T) {
	_, err := run(t, "install", "--dry-run")
	if err == nil || !strings.Contains(err.Error(), "--cluster-name is required") {
		t.Fatalf("err = %v", err)
	}
}

func TestNamespaceAddRefusesContradictoryInjectionFlags(t *testing.T) {
	_, err := run(t, "namespace", "add", "bookstore", "--enable-sidecar-injection", "--disable-sidecar-injection")
	if err == nil || !strings.Contains(err.Error(), "contradict") {
		t.Fatalf("err = %v", err)
	}
}

// The sandbox as a user runs it: `meshfed sandbox up` in one command,
// kubectl against each printed kubeconfig, `meshfed sandbox down`, and no
// process left behind.
func TestSandboxUpKubectlDown(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "meshfed")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build meshfed: %v\n%s", err, out)
	}
	dir := t.TempDir()
	meshfed := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"sandbox", "--dir", dir}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := meshfed("up", "--clusters", "a,b")
	t.Cleanup(func() { _, _ = meshfed("down") })
	if err != nil {
		t.Fatalf("sandbox up: %v\n%s", err, out)
	}
	st, err := sandbox.ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(st.BinDir, sandbox.BinKubectl)
	for _, name := range []string{"a", "b"} {
		kc := filepath.Join(dir, name, "kubeconfig")
		if !strings.Contains(out, "cluster "+name+": kubeconfig "+kc) {
			t.Errorf("up did not print cluster %s's kubeconfig; printed:\n%s", name, out)
		}
		got, err := exec.Command(kubectl, "--kubeconfig", kc, "get", "ns", "-o", "name").CombinedOutput()
		if err != nil || !strings.Contains(string(got), "namespace/kube-system") {
			t.Errorf("kubectl get ns in %s: %v\n%s", name, err, got)
		}
		node, err := exec.Command(kubectl, "--kubeconfig", kc, "get", "node", "sandbox-"+name,
			"-o", "jsonpath={.metadata.labels.topology\\.kubernetes\\.io/zone}").CombinedOutput()
		if err != nil || string(node) != name+"-a" {
			t.Errorf("cluster %s node zone = %q (%v)", name, node, err)
		}
	}
	status, err := meshfed("status")
	if err != nil || !strings.Contains(status, "sandbox running") {
		t.Errorf("status: %v\n%s", err, status)
	}
	if out, err := meshfed("down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(-st.PID, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("processes of the sandbox (group %d) still running after down", st.PID)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); !os.IsNotExist(err) {
		t.Errorf("down left its state record: %v", err)
	}
}
