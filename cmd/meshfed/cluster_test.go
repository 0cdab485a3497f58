package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/deploy/installer"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust/ca"
)

// freePort returns a port free on 127.0.0.1 for both TCP and UDP (gossip).
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func eventuallyCLI(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Two clusters installed with `meshfed install`, joined with `meshfed
// cluster join`, each running the real meshfed-controller binary: the
// controllers gossip on 127.0.0.1, `cluster list` shows both, an export in
// east becomes a ServiceImport in west, and `cluster leave` takes west out.
func TestClusterJoinListLeave(t *testing.T) {
	sb := sandboxtest.Start(t, "east", "west")
	kc := func(name string) string { return sb.Cluster(name).KubeconfigPath }
	for _, name := range []string{"east", "west"} {
		if out, err := run(t, "--kubeconfig", kc(name), "install", "--cluster-name", name); err != nil {
			t.Fatalf("install %s: %v\n%s", name, err, out)
		}
	}
	// Gossip on loopback: each cluster's own port, advertised as 127.0.0.1.
	ctx := context.Background()
	dyn := map[string]dynamic.Interface{}
	for _, name := range []string{"east", "west"} {
		dyn[name] = dynamic.NewForConfigOrDie(sb.Cluster(name).RESTConfig())
		patch := fmt.Sprintf(`{"spec":{"federation":{"bindAddress":"127.0.0.1","advertiseAddress":"127.0.0.1","bindPort":%d,"withdrawAfter":"3s"}}}`, freePort(t))
		if _, err := dyn[name].Resource(federate.MeshConfigGVR).Namespace(deploy.DefaultNamespace).Patch(ctx, deploy.MeshConfigName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// install gave west a root of its own: join says so, and replaces it
	// when asked.
	out, err := run(t, "--kubeconfig", kc("west"), "cluster", "join", "west", "--peer-kubeconfig", kc("east"))
	if err == nil || !strings.Contains(err.Error(), "--replace-root") {
		t.Fatalf("join over a root of west's own: %v\n%s", err, out)
	}
	out, err = run(t, "--kubeconfig", kc("west"), "cluster", "join", "west", "--peer-kubeconfig", kc("east"), "--replace-root")
	if err != nil {
		t.Fatalf("cluster join: %v\n%s", err, out)
	}
	t.Logf("join:\n%s", out)
	// The gossip key was copied (the root key was not: see
	// TestJoinDoesNotCopyRootKey); both MeshConfigs enabled.
	eastKube, westKube := sb.Cluster("east").Client(), sb.Cluster("west").Client()
	for _, s := range []string{federate.DefaultGossipKeySecret} {
		e, err1 := eastKube.CoreV1().Secrets(deploy.DefaultNamespace).Get(ctx, s, metav1.GetOptions{})
		w, err2 := westKube.CoreV1().Secrets(deploy.DefaultNamespace).Get(ctx, s, metav1.GetOptions{})
		if err1 != nil || err2 != nil {
			t.Fatalf("Secret %s: east %v, west %v", s, err1, err2)
		}
		for k, v := range e.Data {
			if string(w.Data[k]) != string(v) {
				t.Errorf("Secret %s key %s differs between east and west", s, k)
			}
		}
	}
	for _, name := range []string{"east", "west"} {
		u, err := dyn[name].Resource(federate.MeshConfigGVR).Namespace(deploy.DefaultNamespace).Get(ctx, deploy.MeshConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if on, _, _ := unstructured.NestedBool(u.Object, "spec", "federation", "enabled"); !on {
			t.Errorf("%s: federation not enabled after join", name)
		}
	}
	if _, err := run(t, "--kubeconfig", kc("west"), "cluster", "join", "--peer-kubeconfig", kc("east")); err != nil {
		t.Errorf("join again (idempotent): %v", err)
	}

	// The controllers.
	bin := filepath.Join(t.TempDir(), "meshfed-controller")
	if out, err := exec.Command("go", "build", "-o", bin, "../meshfed-controller").CombinedOutput(); err != nil {
		t.Fatalf("build meshfed-controller: %v\n%s", err, out)
	}
	for _, name := range []string{"east", "west"} {
		logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--kubeconfig", kc(name), "--xds-address", "127.0.0.1:0", "--issuer-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0", "--webhook-address", "127.0.0.1:0", "--debug-address", "127.0.0.1:0")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("%s controller log:\n%s", name, b)
			}
		})
	}
	eventuallyCLI(t, 2*time.Minute, func() (bool, string) {
		out, err := run(t, "--kubeconfig", kc("west"), "cluster", "list")
		return err == nil && strings.Count(out, " alive ") == 2 && strings.Contains(out, "east") && strings.Contains(out, "west (this)"),
			fmt.Sprintf("cluster list in west: %v\n%s", err, out)
	})
	out, _ = run(t, "--kubeconfig", kc("west"), "cluster", "list")
	t.Logf("cluster list:\n%s", out)

	// An export in east reaches west's ServiceImports through the
	// controllers.
	for _, name := range []string{"east", "west"} {
		if _, err := sb.Cluster(name).Client().CoreV1().Namespaces().Create(ctx, nsObj("bookstore"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := eastKube.CoreV1().Services("bookstore").Create(ctx, svcObj("bookstore", "bookstore-v1", 14001), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	se := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
		"metadata": map[string]any{"namespace": "bookstore", "name": "bookstore-v1"}}}
	if _, err := dyn["east"].Resource(federate.ServiceExportGVR).Namespace("bookstore").Create(ctx, se, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventuallyCLI(t, time.Minute, func() (bool, string) {
		u, err := dyn["west"].Resource(federate.ServiceImportGVR).Namespace("bookstore").Get(ctx, "bookstore-v1", metav1.GetOptions{})
		if err != nil {
			return false, "west has no ServiceImport bookstore/bookstore-v1: " + err.Error()
		}
		cs, _, _ := unstructured.NestedSlice(u.Object, "status", "clusters")
		return len(cs) == 1 && cs[0].(map[string]any)["cluster"] == "east", fmt.Sprintf("clusters %v", cs)
	})

	// Leave: west's controller withdraws and leaves; east sees it left.
	if out, err := run(t, "--kubeconfig", kc("west"), "cluster", "leave"); err != nil {
		t.Fatalf("leave: %v\n%s", err, out)
	}
	eventuallyCLI(t, time.Minute, func() (bool, string) {
		out, err := run(t, "--kubeconfig", kc("east"), "cluster", "list")
		return err == nil && strings.Contains(out, "left"), fmt.Sprintf("cluster list in east after west left: %v\n%s", err, out)
	})
	eventuallyCLI(t, time.Minute, func() (bool, string) {
		_, err := dyn["west"].Resource(federate.ServiceImportGVR).Namespace("bookstore").Get(ctx, "bookstore-v1", metav1.GetOptions{})
		return err != nil, "west kept its ServiceImport after leaving"
	})
}

// TestJoinDoesNotCopyRootKey: `meshfed cluster join` used to copy the
// federation root key into every member, so any member's admin could mint
// any cluster's intermediate. After install and join, no Secret or
// ConfigMap anywhere in west holds east's root key; west's controller
// signs with an intermediate that chains to east's root, and joining again
// keeps that intermediate.
func TestJoinDoesNotCopyRootKey(t *testing.T) {
	sb := sandboxtest.Start(t, "east", "west")
	kc := func(name string) string { return sb.Cluster(name).KubeconfigPath }
	ctx := context.Background()
	td := spiffeid.RequireTrustDomainFromString(deploy.DefaultTrustDomain)
	for _, name := range []string{"east", "west"} {
		if out, err := run(t, "--kubeconfig", kc(name), "install", "--cluster-name", name); err != nil {
			t.Fatalf("install %s: %v\n%s", name, err, out)
		}
		patch := `{"spec":{"federation":{"advertiseAddress":"127.0.0.1","bindPort":7946}}}`
		if _, err := dynamic.NewForConfigOrDie(sb.Cluster(name).RESTConfig()).Resource(federate.MeshConfigGVR).Namespace(deploy.DefaultNamespace).
			Patch(ctx, deploy.MeshConfigName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eastKube, westKube := sb.Cluster("east").Client(), sb.Cluster("west").Client()
	eastRoot, err := ca.LoadRoot(ctx, eastKube, deploy.DefaultNamespace, installer.RootSecretName, td)
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "--kubeconfig", kc("west"), "cluster", "join", "west", "--peer-kubeconfig", kc("east"), "--replace-root")
	if err != nil {
		t.Fatalf("cluster join: %v\n%s", err, out)
	}
	t.Logf("join:\n%s", out)

	keyPEM, err := eastRoot.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(eastRoot.Key)
	if err != nil {
		t.Fatal(err)
	}
	// The private scalar itself, in whatever encoding someone might use.
	scalar := eastRoot.Key.(*ecdsa.PrivateKey).D.Bytes()
	holdsKey := func(b []byte) bool {
		return bytes.Contains(b, keyPEM) || bytes.Contains(b, keyDER) || bytes.Contains(b, scalar) ||
			bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString(keyDER)))
	}
	secrets, err := westKube.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		for k, v := range s.Data {
			if holdsKey(v) {
				t.Errorf("west's Secret %s/%s key %s holds east's root key", s.Namespace, s.Name, k)
			}
		}
	}
	cms, err := westKube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cm := range cms.Items {
		for k, v := range cm.Data {
			if holdsKey([]byte(v)) {
				t.Errorf("west's ConfigMap %s/%s key %s holds east's root key", cm.Namespace, cm.Name, k)
			}
		}
	}
	if _, err := westKube.CoreV1().Secrets(deploy.DefaultNamespace).Get(ctx, installer.RootSecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("west has a root Secret after join (err %v)", err)
	}
	inter, err := ca.LoadIntermediate(ctx, westKube, deploy.DefaultNamespace, installer.IntermediateSecretName, td)
	if err != nil {
		t.Fatalf("west's intermediate: %v", err)
	}
	if r, err := ca.IssuerRoot(inter, eastRoot.Bundle()); err != nil || !r.Equal(eastRoot.Certificate) {
		t.Fatalf("west's intermediate does not chain to east's root: %v", err)
	}
	// Joining again keeps west's intermediate.
	if out, err := run(t, "--kubeconfig", kc("west"), "cluster", "join", "--peer-kubeconfig", kc("east")); err != nil {
		t.Fatalf("join again: %v\n%s", err, out)
	}
	again, err := ca.LoadIntermediate(ctx, westKube, deploy.DefaultNamespace, installer.IntermediateSecretName, td)
	if err != nil || !again.Certificate().Equal(inter.Certificate()) {
		t.Errorf("joining again replaced west's intermediate (err %v)", err)
	}
}

func nsObj(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func svcObj(ns, name string, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "grpc", Port: port, TargetPort: intstr.FromInt32(8080)}}},
	}
}
