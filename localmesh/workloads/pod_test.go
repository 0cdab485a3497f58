package workloads

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/localmesh/gateway"
)

// The container an injected agent runs as: its arguments name container
// paths, the controller's Service and $(VAR)s of its environment.
func TestAContainerSeesItsMountsAndServicesLocally(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bookbuyer-1", Namespace: "bookbuyer"}}
	c := &corev1.Container{
		Name: "meshfed-agent",
		Args: []string{"agent", "--xds-address=meshfed-controller.meshfed-system.svc:15128",
			"--out-dir=/var/run/meshfed/certs", "--bundle-file=/var/run/meshfed-bundle/ca.crt",
			"--node-id=$(POD_NAMESPACE)/$(POD_NAME)", "$(UNDEFINED)", "/etc/other/file", "--relative=certs"},
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "GRPC_XDS_BOOTSTRAP", Value: "/var/run/meshfed/bootstrap.json"},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "meshfed", MountPath: "/var/run/meshfed"},
			{Name: "meshfed-bundle", MountPath: "/var/run/meshfed-bundle"},
			{Name: "nested", MountPath: "/var/run/meshfed/certs"},
		},
	}
	vols := map[string]string{"meshfed": "/pods/a/volumes/meshfed", "meshfed-bundle": "/pods/a/volumes/meshfed-bundle", "nested": "/pods/a/volumes/nested"}
	services := map[string]string{"meshfed-controller.meshfed-system.svc:15128": "unix:///run/xds.sock"}
	ct, err := newContainer(pod, c, vols, services)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"agent", "--xds-address=unix:///run/xds.sock",
		// The longest mount wins; a sibling whose name only starts like a
		// mount is its own.
		"--out-dir=/pods/a/volumes/nested", "--bundle-file=/pods/a/volumes/meshfed-bundle/ca.crt",
		"--node-id=bookbuyer/bookbuyer-1", "$(UNDEFINED)", "/etc/other/file", "--relative=certs"}
	if got := ct.args(c.Args); !slices.Equal(got, want) {
		t.Errorf("args:\n got %q\nwant %q", got, want)
	}
	if !slices.Contains(ct.env, "GRPC_XDS_BOOTSTRAP=/pods/a/volumes/meshfed/bootstrap.json") || !slices.Contains(ct.env, "POD_NAME=bookbuyer-1") {
		t.Errorf("env: %q", ct.env)
	}
	var mounts map[string]string
	for _, e := range ct.env {
		if v, ok := strings.CutPrefix(e, gateway.EnvMounts+"="); ok {
			if err := json.Unmarshal([]byte(v), &mounts); err != nil {
				t.Fatal(err)
			}
		}
	}
	if mounts["/var/run/meshfed/certs"] != "/pods/a/volumes/nested" {
		t.Errorf("%s: %v", gateway.EnvMounts, mounts)
	}

	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "missing", MountPath: "/x"})
	if _, err := newContainer(pod, c, vols, services); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a mount of a volume the Pod lacks: want an error naming it, got %v", err)
	}
}
