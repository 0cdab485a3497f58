package daemon

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshfed/meshfed/deploy"
)

// Config is everything meshfed-controller's flags say.
type Config struct {
	// Kubeconfig is the kubeconfig file; empty means in-cluster.
	Kubeconfig string
	// KubeAPIQPS and KubeAPIBurst limit the controller's requests to the
	// API server (client-go's own default, 5 per second, would take half
	// an hour to write the status of 10,000 ServiceExports).
	KubeAPIQPS   float32
	KubeAPIBurst int
	// MeshName, Namespace and MeshConfig name the mesh, the control
	// plane's namespace and its MeshConfig object there.
	MeshName   string
	Namespace  string
	MeshConfig string
	// ClusterName and TrustDomain override the MeshConfig's values.
	ClusterName string
	TrustDomain string
	// XDSAddress, IssuerAddress and MetricsAddress are host:port listen
	// addresses, or unix://PATH for a Unix socket.
	XDSAddress     string
	IssuerAddress  string
	MetricsAddress string
	// WebhookAddress is where the sidecar injector is served (TLS with the
	// serving certificate; the API server calls it). Empty: not served.
	WebhookAddress string
	// DebugAddress is where the debug API (controller/debug) is served:
	// loopback, reached by port forwarding. Empty: not served.
	DebugAddress string
	// ServingNames are extra DNS names or IP addresses put into the
	// controller's serving certificate, so that clients verifying the
	// hostname they dial (grpc-go's xDS "tls" channel credentials) accept
	// it. The Service's DNS names are always included.
	ServingNames []string
	// BundleConfigMap is the ConfigMap in Namespace the trust bundle is
	// published to, for workloads to verify the issuer.
	BundleConfigMap string
	// LeadingDelay, Debounce, MaxDelay and Resync tune the Kubernetes
	// watcher (kube.Config).
	LeadingDelay, Debounce, MaxDelay, Resync time.Duration
	// MissingReferenceGrace is kube.Config.MissingReferenceGrace.
	MissingReferenceGrace time.Duration
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// MemoryLimit is the Go runtime's soft memory limit: a quantity
	// ("250Mi"), "off", or "auto" (GOMEMLIMIT, else 90 % of the cgroup's
	// memory limit, else none); see memoryLimit.
	MemoryLimit string
}

func DefaultConfig() Config {
	return Config{
		MeshName:        deploy.DefaultMeshName,
		Namespace:       deploy.DefaultNamespace,
		MeshConfig:      deploy.MeshConfigName,
		KubeAPIQPS:      50,
		KubeAPIBurst:    100,
		XDSAddress:      fmt.Sprintf(":%d", deploy.PortXDS),
		IssuerAddress:   fmt.Sprintf(":%d", deploy.PortIssuer),
		MetricsAddress:  fmt.Sprintf(":%d", deploy.PortMetrics),
		WebhookAddress:  fmt.Sprintf(":%d", deploy.PortWebhook),
		DebugAddress:    fmt.Sprintf("127.0.0.1:%d", deploy.PortDebug),
		BundleConfigMap: "meshfed-ca-bundle",
		Debounce:        100 * time.Millisecond,
		MaxDelay:        time.Second,
		Resync:          5 * time.Minute,

		MissingReferenceGrace: 30 * time.Second,
		LogLevel:              "info",
		MemoryLimit:           "auto",
	}
}

func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig file (default: in-cluster configuration)")
	fs.Float32Var(&c.KubeAPIQPS, "kube-api-qps", c.KubeAPIQPS, "requests per second the controller may send the API server (writes of ServiceExport status and ServiceImports, Events)")
	fs.IntVar(&c.KubeAPIBurst, "kube-api-burst", c.KubeAPIBurst, "requests the controller may send the API server in a burst above --kube-api-qps")
	fs.StringVar(&c.MeshName, "mesh-name", c.MeshName, "name of the mesh; namespaces labelled meshfed.io/monitored-by=<mesh-name> are meshed")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "the control plane's namespace (MeshConfig, CA Secrets, bundle ConfigMap)")
	fs.StringVar(&c.MeshConfig, "mesh-config", c.MeshConfig, "name of the MeshConfig in --namespace")
	fs.StringVar(&c.ClusterName, "cluster-name", c.ClusterName, "this cluster's name (default: the MeshConfig's spec.clusterName)")
	fs.StringVar(&c.TrustDomain, "trust-domain", c.TrustDomain, "SPIFFE trust domain (default: the MeshConfig's spec.trustDomain)")
	fs.StringVar(&c.XDSAddress, "xds-address", c.XDSAddress, "listen address of the xDS server (mTLS)")
	fs.StringVar(&c.IssuerAddress, "issuer-address", c.IssuerAddress, "listen address of the certificate issuer (TLS, ServiceAccount tokens)")
	fs.StringVar(&c.MetricsAddress, "metrics-address", c.MetricsAddress, "listen address of /metrics, /readyz and /healthz")
	fs.StringVar(&c.DebugAddress, "debug-address", c.DebugAddress, `listen address of the debug API (proxy status and configuration; keep it on loopback: users reach it by port forwarding, which RBAC authorizes); "" serves none`)
	fs.StringVar(&c.WebhookAddress, "webhook-address", c.WebhookAddress, `listen address of the sidecar injector (TLS, called by the API server); "" serves none`)
	fs.StringSliceVar(&c.ServingNames, "serving-name", c.ServingNames, "extra DNS name or IP address for the controller's serving certificate (repeatable)")
	fs.StringVar(&c.BundleConfigMap, "bundle-configmap", c.BundleConfigMap, "ConfigMap the trust bundle is published to")
	fs.DurationVar(&c.LeadingDelay, "leading-delay", c.LeadingDelay, "wait this long before building a change that follows a quiet period (no change for --debounce); 0 builds it at once")
	fs.DurationVar(&c.Debounce, "debounce", c.Debounce, "wait this long for a burst of Kubernetes changes to end")
	fs.DurationVar(&c.MaxDelay, "max-delay", c.MaxDelay, "never wait longer than this after the first change of a burst")
	fs.DurationVar(&c.Resync, "resync", c.Resync, "rebuild and re-send the whole configuration this often")
	fs.DurationVar(&c.MissingReferenceGrace, "missing-reference-grace", c.MissingReferenceGrace, "report a TrafficSplit backend or root service, or a TrafficTarget route, that exists nowhere in the federation only after it has been missing this long")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.MemoryLimit, "memory-limit", c.MemoryLimit, `Go soft memory limit ("250Mi"), "off", or "auto": GOMEMLIMIT if set, else 90% of the container's cgroup memory limit if any, else none`)
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	for flag, addr := range map[string]string{"--xds-address": c.XDSAddress, "--issuer-address": c.IssuerAddress, "--metrics-address": c.MetricsAddress} {
		if err := checkListenAddress(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", flag, addr, err))
		}
	}
	if c.KubeAPIQPS <= 0 || c.KubeAPIBurst < 1 {
		errs = append(errs, fmt.Errorf("--kube-api-qps %v and --kube-api-burst %d must be positive", c.KubeAPIQPS, c.KubeAPIBurst))
	}
	if c.MeshName == "" || c.Namespace == "" || c.MeshConfig == "" {
		errs = append(errs, errors.New("--mesh-name, --namespace and --mesh-config must not be empty"))
	}
	return errors.Join(errs...)
}
