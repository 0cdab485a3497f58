package daemon

import (
	"bytes"
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust/ca"
)

// Through a root rotation the injector's webhook trusts what the mesh
// trusts: both roots while both are trusted, then the new one alone; a
// mesh installed without the injector has nothing to update.
func TestInjectorCABundleFollowsTheTrustedRoots(t *testing.T) {
	sb := sandboxtest.Start(t, "east")
	client := sb.Cluster("east").Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	td := spiffeid.RequireTrustDomainFromString("meshfed.local")
	old, err := ca.GenerateRoot(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	next, err := ca.GenerateRoot(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	o := deploy.DefaultOptions()
	name := deploy.InjectorWebhookName(o)
	if err := syncInjectorCABundle(ctx, client, name, x509bundle.FromX509Authorities(td, []*x509.Certificate{old.Certificate})); err != nil {
		t.Fatalf("no webhook installed: %v", err)
	}
	if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, deploy.InjectorWebhook(o, old.CertificatePEM()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, roots := range [][]*x509.Certificate{{old.Certificate, next.Certificate}, {next.Certificate}} {
		if err := syncInjectorCABundle(ctx, client, name, x509bundle.FromX509Authorities(td, roots)); err != nil {
			t.Fatal(err)
		}
		wh, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := wh.Webhooks[0].ClientConfig.CABundle; !bytes.Equal(got, deploy.CABundlePEM(roots)) {
			t.Errorf("caBundle with %d trusted roots:\n%s", len(roots), got)
		}
	}
}
