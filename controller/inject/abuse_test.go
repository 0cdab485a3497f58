package inject_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshfed/meshfed/controller/inject"
)

// Whoever reaches the injector's port can send it anything. It reads at
// most 4 MiB, refuses what is not an AdmissionReview, answers only Pod
// creation with a patch, and a Pod that does not decode is refused; it
// never fails open into injecting something else.
func TestTheInjectorRefusesWhatIsNotAPodReview(t *testing.T) {
	wh := &inject.Webhook{Config: cfg, Logger: slog.New(slog.DiscardHandler),
		NamespaceAnnotations: func(context.Context, string) (map[string]string, error) { return enabled, nil }}
	post := func(body []byte) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		wh.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, inject.Path, bytes.NewReader(body)))
		return rec
	}
	review := func(kind, op string, object []byte) []byte {
		b, _ := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{UID: "u-1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: kind},
				Operation: admissionv1.Operation(op), Namespace: "bookbuyer", Object: runtime.RawExtension{Raw: object}},
		})
		return b
	}
	answer := func(rec *httptest.ResponseRecorder) *admissionv1.AdmissionResponse {
		t.Helper()
		var r admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil || r.Response == nil || r.Response.UID != "u-1" {
			t.Fatalf("answer %q: %v", rec.Body.String(), err)
		}
		return r.Response
	}

	if rec := post(bytes.Repeat([]byte("x"), 5<<20)); rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 5 MiB body: %d", rec.Code)
	}
	if rec := post([]byte(`{"request":`)); rec.Code != http.StatusBadRequest {
		t.Errorf("a body that is not JSON: %d", rec.Code)
	}
	if rec := post([]byte(`{"kind":"AdmissionReview"}`)); rec.Code != http.StatusBadRequest {
		t.Errorf("a review with no request: %d", rec.Code)
	}
	rec := httptest.NewRecorder()
	wh.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, inject.Path, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", rec.Code)
	}
	pod, _ := json.Marshal(plainPod(nil))
	for _, tc := range []struct{ kind, op string }{{"Secret", "CREATE"}, {"Pod", "UPDATE"}, {"Pod", "DELETE"}} {
		if r := answer(post(review(tc.kind, tc.op, pod))); !r.Allowed || r.Patch != nil {
			t.Errorf("%s %s: allowed %v, patch %s; want allowed untouched", tc.op, tc.kind, r.Allowed, r.Patch)
		}
	}
	if r := answer(post(review("Pod", "CREATE", []byte(`{"spec":{"containers":"not a list"}}`)))); r.Allowed || !strings.Contains(r.Result.Message, "does not decode") {
		t.Errorf("a Pod that does not decode: %+v", r)
	}
	if r := answer(post(review("Pod", "CREATE", pod))); !r.Allowed || r.Patch == nil {
		t.Errorf("a plain Pod in an enabled namespace: %+v", r)
	}
}
