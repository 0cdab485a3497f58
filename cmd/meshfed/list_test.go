package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
)

// TestClusterListEscapesHostileNames stores in a real MeshConfig's status
// what a hostile federation member could get into it (a service name with
// a newline and a terminal escape, an address with a carriage return, a
// fingerprint with a bidi override, a reason with a tab) and runs `meshfed
// cluster list`: the output carries no control byte but its own line ends,
// and every hostile name is printed escaped.
func TestClusterListEscapesHostileNames(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	kc := sb.Cluster("east").KubeconfigPath
	if out, err := run(t, "--kubeconfig", kc, "install", "--cluster-name", "east"); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	now := time.Now().UTC().Truncate(time.Second)
	st := federate.Status{Cluster: "east", UpdatedAt: now, Members: []federate.MemberStatus{
		{Name: "east", State: "alive", Local: true, ServiceCount: 1, Services: []string{"bookstore/bookstore"}, Network: "net-east", Gateways: []string{"192.0.2.10:15443"}},
		{Name: "mallory", Address: "127.0.0.1:7946\r\x1b[2K", Network: "net\x1b[31m", Gateways: []string{"192.0.2.66:1\n"}, State: "alive", CatalogVersion: 3, ServiceCount: 3,
			Services:               []string{"bookstore/bookstore-v3", "bookstore/evil\nname", "bookstore/\x1b]0;pwned\x07"},
			Withdrawn:              []string{"bookstore/\u202eevil"},
			Reason:                 "mallory: dead\tsince 12:00:00\nFAKE alive",
			TrustBundleFingerprint: "\u202eabcdef0123456789abcdef",
			Invalid:                []string{"bookstore/evil\nname: not a DNS-1035 label"}, InvalidCount: 2},
	}}
	raw, err := json.Marshal(map[string]any{"status": map[string]any{"federation": st}})
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(sb.Cluster("east").RESTConfig())
	if _, err := dyn.Resource(federate.MeshConfigGVR).Namespace(deploy.DefaultNamespace).Patch(context.Background(),
		deploy.MeshConfigName, types.MergePatchType, raw, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "--kubeconfig", kc, "cluster", "list")
	if err != nil {
		t.Fatalf("cluster list: %v\n%s", err, out)
	}
	t.Logf("cluster list:\n%s", out)
	for i := 0; i < len(out); i++ {
		if c := out[i]; (c < 0x20 && c != '\n') || c == 0x7f {
			t.Fatalf("output carries control byte %#x at %d: %q", c, i, out)
		}
	}
	if strings.Contains(out, "\u202e") {
		t.Fatalf("output carries a bidi override: %q", out)
	}
	for _, want := range []string{`"bookstore/evil\nname"`, `"bookstore/\x1b]0;pwned\a"`, `"127.0.0.1:7946\r\x1b[2K"`, `"\u202eabcdef0123456..."`,
		`"mallory: dead\tsince 12:00:00\nFAKE alive"`, "bookstore/bookstore-v3", "3 (2 invalid)", "mallory invalid: 1 more",
		"net-east", "east gateways: 192.0.2.10:15443", `"net\x1b[31m"`, `mallory gateways: "192.0.2.66:1\n"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s", want)
		}
	}
	// No controller runs here: the live view is not available, which the
	// first line says, and the MeshConfig's status is shown.
	if !strings.HasPrefix(out, "meshfed: the live view is not available") {
		t.Errorf("output should first say the live view is not available: %q", out)
	}
	if n := strings.Count(out, "\n"); n != 12 {
		t.Errorf("output has %d lines, want 12 (no line forged by a name)", n)
	}
}
