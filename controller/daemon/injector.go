package daemon

import (
	"bytes"
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/meshfed/meshfed/deploy"
)

// syncInjectorCABundle makes the injector webhook's caBundle the roots the
// mesh trusts, so that the API server keeps accepting the controller's
// serving certificate through a root rotation. No webhook (installed with
// --sidecar-injector=false) is not an error.
func syncInjectorCABundle(ctx context.Context, client kubernetes.Interface, name string, bundle *x509bundle.Bundle) error {
	want := deploy.CABundlePEM(bundle.X509Authorities())
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		wh, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sidecar injector webhook %s: %w", name, err)
		}
		changed := false
		for i := range wh.Webhooks {
			if !bytes.Equal(wh.Webhooks[i].ClientConfig.CABundle, want) {
				wh.Webhooks[i].ClientConfig.CABundle, changed = want, true
			}
		}
		if !changed {
			return nil
		}
		_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, wh, metav1.UpdateOptions{})
		return err
	})
}
