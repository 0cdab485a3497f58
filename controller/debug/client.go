package debug

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/internal/portforward"
)

// Client reads one cluster's debug API through a port forward.
type Client struct {
	// Pod is the controller Pod it reads.
	Pod  string
	base string
	http *http.Client
	fwd  *portforward.Forward
}

// Dial forwards a local port to the debug API of a running
// meshfed-controller Pod in namespace, with the caller's credentials.
func Dial(ctx context.Context, cfg *rest.Config, namespace string) (*Client, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	pods, err := kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: deploy.LabelName + "=" + deploy.ControllerName})
	if err != nil {
		return nil, fmt.Errorf("find meshfed-controller in %s: %w", namespace, err)
	}
	running := slices.DeleteFunc(pods.Items, func(p corev1.Pod) bool { return p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil })
	if len(running) == 0 {
		return nil, fmt.Errorf("no running meshfed-controller Pod in namespace %s (is meshfed installed there? `kubectl -n %s get pods`)", namespace, namespace)
	}
	// The newest: after a rollout, the one serving.
	slices.SortFunc(running, func(a, b corev1.Pod) int { return b.CreationTimestamp.Compare(a.CreationTimestamp.Time) })
	pod := running[0].Name
	fwd, err := portforward.Start(cfg, namespace, pod, deploy.PortDebug)
	if err != nil {
		return nil, fmt.Errorf("reach meshfed-controller's debug API (%s/%s port %d; needs create on pods/portforward there): %w", namespace, pod, deploy.PortDebug, err)
	}
	return &Client{Pod: pod, base: "http://" + fwd.Address, http: &http.Client{Timeout: 30 * time.Second}, fwd: fwd}, nil
}

// URL is the web view's address on this machine.
func (c *Client) URL() string { return c.base + "/" }

// Close ends the port forward.
func (c *Client) Close() error { return c.fwd.Close() }

// Proxies reads PathProxies.
func (c *Client) Proxies(ctx context.Context) (Proxies, error) {
	var out Proxies
	return out, c.get(ctx, PathProxies, &out)
}

// Federation reads PathFederation.
func (c *Client) Federation(ctx context.Context) (Federation, error) {
	var out Federation
	return out, c.get(ctx, PathFederation, &out)
}

// Config reads PathConfig for a proxy key.
func (c *Client) Config(ctx context.Context, key string) (Config, error) {
	var out Config
	return out, c.get(ctx, PathConfig+"?key="+url.QueryEscape(key), &out)
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("meshfed-controller %s: %s: %s", c.Pod, resp.Status, body)
	}
	return json.Unmarshal(body, v)
}
