package operability

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/meshfed/meshfed/controller/inject"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/localmesh"
	"github.com/meshfed/meshfed/tests/internal/suite"
)

// helmInstall installs meshfed's chart as `helm install meshfed
// deploy/helm/meshfed -n <namespace> --create-namespace --set
// clusterName=<name>` does, with Helm's own install action.
func helmInstall(ctx context.Context, kubeconfig string, o deploy.Options) error {
	ch, err := loader.Load(filepath.Join("..", "..", "deploy", "helm", "meshfed"))
	if err != nil {
		return err
	}
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace = &kubeconfig, &o.Namespace
	cfg := action.NewConfiguration()
	if err := cfg.Init(flags, o.Namespace, "secret"); err != nil {
		return err
	}
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace, in.CreateNamespace = "meshfed", o.Namespace, true
	// The controller starts after install; waiting for it would wait for
	// ever.
	in.WaitStrategy, in.Timeout = kube.HookOnlyStrategy, 2*time.Minute
	values := map[string]any{"clusterName": o.ClusterName}
	if _, err := in.RunWithContext(ctx, ch, values); err != nil {
		return fmt.Errorf("helm install: %w", err)
	}
	return nil
}

// A cluster installed with the Helm chart instead of `meshfed install`
// runs the mesh: the controller makes the root at its first start, writes
// the injector's caBundle the chart leaves empty, Pods of plain manifests
// are stored injected through the real admission path, and `meshfed check`
// passes.
func TestAClusterInstalledWithHelmRunsTheMesh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	h := suite.Start(ctx, t, localmesh.Config{Clusters: []string{"east"}, Namespaces: []string{"bookbuyer"}, InstallControlPlane: helmInstall})
	client := h.Cluster("east").Sandbox.Client()

	mc, err := h.Cluster("east").Installer.Dynamic().Resource(deploy.MeshConfigGVR).Namespace(deploy.DefaultNamespace).
		Get(ctx, deploy.MeshConfigName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := mc.GetAnnotations()["meta.helm.sh/release-name"]; got != "meshfed" {
		t.Fatalf("the MeshConfig was not made by the Helm release (annotations %v)", mc.GetAnnotations())
	}

	o := deploy.DefaultOptions()
	err = localmesh.WaitUntil(ctx, 2*time.Minute, "the controller writes the injector's caBundle", func(time.Time) (bool, string) {
		wh, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, deploy.InjectorWebhookName(o), metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		inter, err := client.CoreV1().Secrets(deploy.DefaultNamespace).Get(ctx, deploy.IntermediateSecretName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		got := wh.Webhooks[0].ClientConfig.CABundle
		return len(got) > 0 && string(got) == string(inter.Data["ca.crt"]), fmt.Sprintf("caBundle %d bytes", len(got))
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := h.Apply(ctx, "east", "apps/bookbuyer.yaml"); err != nil {
		t.Fatal(err)
	}
	err = localmesh.WaitUntil(ctx, 2*time.Minute, "bookbuyer's Pod is stored injected", func(time.Time) (bool, string) {
		pods, err := client.CoreV1().Pods("bookbuyer").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		injected := slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool {
			return p.Annotations[inject.AnnotationInjected] == inject.ProxyProxyless &&
				slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == inject.AgentContainer })
		})
		return injected, fmt.Sprintf("%d Pods", len(pods.Items))
	})
	if err != nil {
		t.Fatal(err)
	}

	kubeconfig := mergedKubeconfig(t, h)
	var out string
	err = localmesh.WaitUntil(ctx, 2*time.Minute, "meshfed check passes", func(time.Time) (bool, string) {
		var code int
		out, code = runCheck(ctx, t, h, kubeconfig)
		return code == 0, out
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("meshfed check on the Helm-installed cluster:\n%s", out)

	// meshfed's own commands find the Helm-installed mesh.
	list, err := exec.CommandContext(ctx, h.MeshfedPath(), "mesh", "list", "--kubeconfig", h.Cluster("east").Kubeconfig).CombinedOutput()
	if err != nil {
		t.Fatalf("meshfed mesh list: %v\n%s", err, list)
	}
	t.Logf("meshfed mesh list:\n%s", list)
}
