package deploy

import (
	"crypto/x509"
	"encoding/pem"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// InjectorPath is where meshfed-controller serves the injector.
const InjectorPath = "/mutate-pods"

// InjectorWebhook is the MutatingWebhookConfiguration that sends Pod
// creations in the mesh's namespaces to meshfed-controller's injector
// (controller/inject): only namespaces labelled monitored-by this mesh,
// never the control plane's or kube-system; failurePolicy Fail (a meshed
// Pod never starts without its data plane), no side effects, a short
// timeout, reinvoked if another webhook changes the Pod after it.
// caBundle is the mesh's root, which the controller's serving certificate
// chains to.
func InjectorWebhook(o Options, caBundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	fail, none, ifNeeded := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone, admissionregistrationv1.IfNeededReinvocationPolicy
	path, port, timeout := InjectorPath, int32(PortWebhook), int32(5)
	scope := admissionregistrationv1.NamespacedScope
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: InjectorWebhookName(o), Labels: o.Labels()},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "inject.meshfed.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service:  &admissionregistrationv1.ServiceReference{Namespace: o.Namespace, Name: ControllerName, Path: &path, Port: &port},
				CABundle: caBundle,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: &scope},
			}},
			NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{LabelMonitoredBy: o.MeshName},
				MatchExpressions: []metav1.LabelSelectorRequirement{{
					Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{o.Namespace, "kube-system"},
				}},
			},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			ReinvocationPolicy:      &ifNeeded,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
}

// InjectorWebhookName names the mesh's injector webhook, unique per mesh
// and namespace.
func InjectorWebhookName(o Options) string { return o.ClusterRoleName() + "-injector" }

// CABundlePEM is the PEM of every root in roots, for a webhook's caBundle.
func CABundlePEM(roots []*x509.Certificate) []byte {
	var out []byte
	for _, c := range roots {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// InjectorWebhookObject is InjectorWebhook as an object to apply.
func InjectorWebhookObject(o Options, caBundle []byte) (*unstructured.Unstructured, error) {
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(InjectorWebhook(o, caBundle))
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: obj}, nil
}
