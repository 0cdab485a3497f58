package bundle_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/controller/bundle"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust/ca"
)

// Every namespace of the mesh gets the trust bundle, and the new one after
// a rotation; other namespaces get nothing.
func TestBundleReachesEveryMeshNamespace(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	client := sb.Cluster("east").Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	td := spiffeid.RequireTrustDomainFromString("meshfed.local")
	newRoot := func() *ca.Root {
		r, err := ca.GenerateRoot(td, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var mu sync.Mutex
	current := newRoot().Bundle()
	cfg := bundle.DefaultConfig()
	cfg.Client, cfg.MeshName = client, "meshfed"
	cfg.Bundle = func() *x509bundle.Bundle { mu.Lock(); defer mu.Unlock(); return current }
	p, err := bundle.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() { stop(); <-done }()

	for name, labels := range map[string]map[string]string{
		"bookstore": {deploy.LabelMonitoredBy: "meshfed"},
		"bookbuyer": {deploy.LabelMonitoredBy: "meshfed"},
		"other":     {deploy.LabelMonitoredBy: "another-mesh"},
		"plain":     nil,
	} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// `meshfed namespace add` creates the ConfigMap; the controller
		// only updates it.
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "meshfed-ca-bundle", Namespace: name}}
		if _, err := client.CoreV1().ConfigMaps(name).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	want := func() string {
		mu.Lock()
		defer mu.Unlock()
		return string(ca.EncodeCertificatesPEM(current.X509Authorities()))
	}
	waitBundle := func(ns string) {
		t.Helper()
		for {
			cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "meshfed-ca-bundle", metav1.GetOptions{})
			if err == nil && cm.Data["ca.crt"] == want() {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("namespace %s: no current bundle (err %v)", ns, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitBundle("bookstore")
	waitBundle("bookbuyer")

	// Rotation: the bundle is the union of old and new roots.
	mu.Lock()
	union, err := ca.Union(current, newRoot().Bundle())
	if err != nil {
		t.Fatal(err)
	}
	current = union
	mu.Unlock()
	p.Notify()
	waitBundle("bookstore")
	waitBundle("bookbuyer")

	// A namespace added to the mesh later gets it too.
	if _, err := client.CoreV1().Namespaces().Patch(ctx, "plain", "application/merge-patch+json",
		[]byte(`{"metadata":{"labels":{"meshfed.io/monitored-by":"meshfed"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBundle("plain")
	if cm, err := client.CoreV1().ConfigMaps("other").Get(ctx, "meshfed-ca-bundle", metav1.GetOptions{}); err != nil || len(cm.Data) != 0 {
		t.Errorf("another mesh's namespace got this mesh's bundle (%v, err %v)", cm.Data, err)
	}

	// A meshed namespace without the ConfigMap is left alone (the
	// controller may not create it there) and the others keep being served.
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: "unprepared", Labels: map[string]string{deploy.LabelMonitoredBy: "meshfed"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	current = newRoot().Bundle()
	mu.Unlock()
	p.Notify()
	waitBundle("bookstore")
	if _, err := client.CoreV1().ConfigMaps("unprepared").Get(ctx, "meshfed-ca-bundle", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the publisher created a ConfigMap in namespace unprepared (err %v)", err)
	}

	// Its ConfigMap created after the namespace joined the mesh (as a
	// user who labels first would): the publisher's retry fills it.
	if _, err := client.CoreV1().ConfigMaps("unprepared").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "meshfed-ca-bundle", Namespace: "unprepared"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBundle("unprepared")
}
