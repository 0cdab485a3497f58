package inject

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/capture"
)

// Path is where the webhook is served.
const Path = "/mutate-pods"

// maxReviewBytes bounds an AdmissionReview the webhook reads (the API
// server sends at most its own request limit; a Pod is far smaller).
const maxReviewBytes = 4 << 20

// Webhook serves AdmissionReview v1 for Pod creation: it decides with
// Decide and answers with Mutate's changes as a JSON patch, or refuses the
// Pod with the reason an annotation is wrong. It has no side effects
// (dry-run requests are answered alike).
type Webhook struct {
	Config Config
	// NamespaceAnnotations returns a namespace's annotations.
	NamespaceAnnotations func(ctx context.Context, name string) (map[string]string, error)
	Logger               *slog.Logger
}

// ServeHTTP implements http.Handler.
func (wh *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil || len(body) > maxReviewBytes {
		http.Error(w, "unreadable or oversize AdmissionReview", http.StatusRequestEntityTooLarge)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("not an AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	resp := wh.review(r.Context(), review.Request)
	resp.UID = review.Request.UID
	out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// review answers one request.
func (wh *Webhook) review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return allow
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return refuse(fmt.Sprintf("meshfed: the Pod does not decode: %v", err))
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	ns, err := wh.NamespaceAnnotations(ctx, req.Namespace)
	if err != nil {
		return refuse(fmt.Sprintf("meshfed: reading namespace %s: %v", req.Namespace, err))
	}
	d, err := Decide(ns, &pod)
	if err != nil {
		wh.Logger.Warn("inject: Pod refused", "namespace", req.Namespace, "pod", name, "err", err)
		return refuse("meshfed: " + err.Error())
	}
	if !d.Inject {
		wh.Logger.Debug("inject: Pod left as it is", "namespace", req.Namespace, "pod", name, "reason", d.Reason)
		return allow
	}
	var injected *corev1.Pod
	switch d.Proxy {
	case ProxyEnvoy:
		cc, err := capture.FromAnnotations(capture.DefaultConfig(), pod.Annotations)
		if err == nil {
			injected, err = MutateEnvoy(&pod, wh.Config, cc)
		}
		if err != nil {
			return refuse("meshfed: " + err.Error())
		}
	default:
		injected = Mutate(&pod, wh.Config)
	}
	patch, err := jsonPatch(&pod, injected)
	if err != nil {
		return refuse(fmt.Sprintf("meshfed: %v", err))
	}
	pt := admissionv1.PatchTypeJSONPatch
	wh.Logger.Info("inject: Pod injected", "namespace", req.Namespace, "pod", name, "proxy", d.Proxy, "reason", d.Reason, "dry-run", req.DryRun != nil && *req.DryRun)
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt}
}

func refuse(msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusBadRequest, Reason: metav1.StatusReasonBadRequest, Message: msg}}
}

// jsonPatch turns what Mutate changed into a JSON patch: "add" replaces
// a member that exists and creates one that does not (RFC 6902).
func jsonPatch(before, after *corev1.Pod) ([]byte, error) {
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	add := func(path string, v any) { ops = append(ops, op{"add", path, v}) }
	add("/spec/initContainers", after.Spec.InitContainers)
	add("/spec/containers", after.Spec.Containers)
	add("/spec/volumes", after.Spec.Volumes)
	add("/metadata/annotations", after.Annotations)
	return json.Marshal(ops)
}

// Serve serves the webhook at Path on lis with TLS until ctx ends.
func (wh *Webhook) Serve(ctx context.Context, lis net.Listener, tlsCfg *tls.Config) error {
	mux := http.NewServeMux()
	mux.Handle(Path, wh)
	srv := &http.Server{Handler: mux, TLSConfig: tlsCfg, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
