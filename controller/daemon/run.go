package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshfed/meshfed/controller/bundle"
	"github.com/meshfed/meshfed/controller/debug"
	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/inject"
	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/controller/meshconfig"
	"github.com/meshfed/meshfed/controller/xds/server"
	"github.com/meshfed/meshfed/deploy"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/controllerca"
	"github.com/meshfed/meshfed/trust/issuer"
	"github.com/meshfed/meshfed/trust/mtls"
)

// meshSettings is what the controller reads from its MeshConfig at start.
type meshSettings struct {
	ClusterName, TrustDomain       string
	RootSecret, IntermediateSecret string
	SVIDTTL                        time.Duration
}

func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	limit, err := applyMemoryLimit(cfg.MemoryLimit)
	if err != nil {
		return err
	}
	log.Info("meshfed-controller: Go soft memory limit", "limit", limit)
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = cfg.KubeAPIQPS, cfg.KubeAPIBurst
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	ms, err := readMeshConfig(ctx, dyn, cfg, log)
	if err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(ms.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust domain %q: %w", ms.TrustDomain, err)
	}

	// Trust: the shared root (or an intermediate signed offline), this
	// cluster's intermediate, the published bundle, the serving SVID.
	caCfg := ca.DefaultConfig()
	caCfg.TrustDomain, caCfg.ClusterName, caCfg.SVIDTTL = ms.TrustDomain, ms.ClusterName, ms.SVIDTTL
	caSecrets := controllerca.Secrets{Namespace: cfg.Namespace, Root: ms.RootSecret, Intermediate: ms.IntermediateSecret, TrustDomain: ms.TrustDomain}
	inter, err := controllerca.Load(ctx, client, caSecrets, caCfg, log)
	if err != nil {
		return err
	}
	authority := ca.NewAuthority(inter)
	if err := ca.PublishBundle(ctx, client, cfg.Namespace, cfg.BundleConfigMap, inter.Bundle()); err != nil {
		return fmt.Errorf("publish trust bundle: %w", err)
	}
	controllerID, err := trust.WorkloadID(td, cfg.Namespace, deploy.ControllerName)
	if err != nil {
		return err
	}
	names := append([]string{
		deploy.ControllerName + "." + cfg.Namespace + ".svc",
		deploy.ControllerName + "." + cfg.Namespace + ".svc.cluster.local",
	}, cfg.ServingNames...)
	svid, err := controllerca.ServingSVID(inter, controllerID, time.Hour, names)
	if err != nil {
		return err
	}
	serving := mtls.NewSource(svid, inter.Bundle())

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The watcher feeds the xDS server; the server's ACKs feed the
	// watcher's change-to-ACK metric.
	var xds *server.Server
	// One set of informers for the watcher and the federation bridge.
	shared, err := kube.NewInformers(client, dyn, cfg.Namespace, cfg.Resync)
	if err != nil {
		return err
	}
	kcfg := kube.DefaultConfig()
	kcfg.Informers = shared
	kcfg.Client, kcfg.Dynamic = client, dyn
	kcfg.MeshName, kcfg.Namespace, kcfg.MeshConfigName = cfg.MeshName, cfg.Namespace, cfg.MeshConfig
	kcfg.ClusterName, kcfg.TrustDomain = ms.ClusterName, ms.TrustDomain
	kcfg.LeadingDelay, kcfg.Debounce, kcfg.MaxDelay, kcfg.Resync = cfg.LeadingDelay, cfg.Debounce, cfg.MaxDelay, cfg.Resync
	kcfg.MissingReferenceGrace = cfg.MissingReferenceGrace
	// The junction merges the federation's remote view into every state;
	// the lifecycle runs the federation member as MeshConfig says.
	fedLog := log.With("component", "federation")
	junction := federate.NewJunction(kube.SinkFunc(func(s mesh.State) ([]mesh.Problem, error) { return xds.Update(s) }), fedLog)
	kcfg.Sink = junction
	lcfg := federate.LifecycleConfig{Client: client, Dynamic: dyn, Namespace: cfg.Namespace, MeshConfigName: cfg.MeshConfig,
		ClusterName: ms.ClusterName, TrustDomain: ms.TrustDomain,
		Signer: &clusterSigner{authority: authority, cluster: ms.ClusterName}, Bundle: authorityBundle{authority},
		Registerer: reg, Logger: fedLog, Retry: 5 * time.Second, Informers: shared}
	kcfg.Registerer, kcfg.Logger = reg, log
	watcher, err := kube.New(kcfg)
	if err != nil {
		return err
	}
	xcfg := server.DefaultConfig()
	if xcfg.Listener, err = listen(cfg.XDSAddress); err != nil {
		return fmt.Errorf("xds server: %w", err)
	}
	defer xcfg.Listener.Close()
	xcfg.TLS = xdsServerTLS(serving, authority, td)
	xcfg.Authenticator = server.PeerCertificateAuthenticator{TrustDomain: ms.TrustDomain}
	xcfg.GatewayIdentity = mesh.NewIdentity(ms.TrustDomain, cfg.Namespace, deploy.GatewayName)
	xcfg.Registerer, xcfg.Logger = reg, log
	xcfg.OnAck = watcher.OnAck
	// SDS: each sidecar gets its own identity's SVID from this cluster's CA.
	xcfg.Secrets = server.NewAuthoritySecrets(authority, ms.SVIDTTL)
	if xds, err = server.New(xcfg); err != nil {
		return err
	}
	// The cluster's gateway addresses are published while a gateway
	// replica is connected to this server.
	lcfg.Presence = xds
	board := &federate.StatusBoard{}
	lcfg.Board = board
	lifecycle, err := federate.NewLifecycle(lcfg, junction)
	if err != nil {
		return err
	}
	icfg := issuer.DefaultConfig()
	icfg.Address, icfg.SVIDTTL, icfg.Log = cfg.IssuerAddress, ms.SVIDTTL, log
	icfg.Namespaces = issuer.MeshNamespaces{Client: client, MeshName: cfg.MeshName}
	icfg.Gateway = &issuer.ServiceAccount{Namespace: cfg.Namespace, Name: deploy.GatewayName}
	iss, err := issuer.NewServer(icfg, authority, issuer.NewTokenReviewer(client, trust.DefaultAudience), serving)
	if err != nil {
		return err
	}
	issuerLis, err := listen(cfg.IssuerAddress)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	defer issuerLis.Close()
	metricsLis, err := listen(cfg.MetricsAddress)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	var webhookLis net.Listener
	if cfg.WebhookAddress != "" {
		if webhookLis, err = listen(cfg.WebhookAddress); err != nil {
			return fmt.Errorf("sidecar injector: %w", err)
		}
		defer webhookLis.Close()
	}

	var debugLis net.Listener
	if cfg.DebugAddress != "" {
		if debugLis, err = listen(cfg.DebugAddress); err != nil {
			return fmt.Errorf("debug API: %w", err)
		}
		defer debugLis.Close()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	start := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	start("informers", func(ctx context.Context) error {
		shared.Start(ctx)
		<-ctx.Done()
		shared.Shutdown()
		return nil
	})
	start("xds server", xds.Run)
	start("issuer", func(ctx context.Context) error { return iss.Serve(ctx, issuerLis) })
	start("kubernetes watcher", watcher.Run)
	start("federation junction", junction.Run)
	start("federation", lifecycle.Run)
	start("metrics", func(ctx context.Context) error { return serveMetrics(ctx, metricsLis, reg, watcher) })
	if debugLis != nil {
		start("debug API", func(ctx context.Context) error {
			return debug.Serve(ctx, debugLis, debug.Handler(ms.ClusterName, xds, board))
		})
	}
	injectorOpts := deploy.DefaultOptions()
	injectorOpts.MeshName, injectorOpts.Namespace = cfg.MeshName, cfg.Namespace
	injectorName := deploy.InjectorWebhookName(injectorOpts)
	if err := syncInjectorCABundle(ctx, client, injectorName, authority.Current().Bundle()); err != nil {
		// Not fatal: the webhook's caBundle is what install wrote.
		log.Warn("the sidecar injector's caBundle could not be brought up to date", "err", err)
	}
	if webhookLis != nil {
		injector := &inject.Webhook{
			Config: inject.Config{Namespace: cfg.Namespace, TrustDomain: ms.TrustDomain, AgentImage: deploy.AgentImage()},
			NamespaceAnnotations: func(ctx context.Context, name string) (map[string]string, error) {
				ns, err := client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return nil, err
				}
				return ns.Annotations, nil
			},
			Logger: log,
		}
		// The API server presents no mesh certificate: TLS, not mTLS.
		start("sidecar injector", func(ctx context.Context) error {
			return injector.Serve(ctx, webhookLis, tlsconfig.TLSServerConfig(serving))
		})
	}
	bcfg := bundle.DefaultConfig()
	bcfg.Client, bcfg.MeshName, bcfg.ConfigMapName, bcfg.Log = client, cfg.MeshName, cfg.BundleConfigMap, log
	bcfg.Bundle = func() *x509bundle.Bundle { return authority.Current().Bundle() }
	bundles, err := bundle.New(bcfg)
	if err != nil {
		return err
	}
	start("trust bundle in mesh namespaces", bundles.Run)
	// Root rotation: a changed CA Secret is applied without a restart.
	reloader, err := controllerca.NewReloader(controllerca.ReloaderConfig{
		Client: client, Secrets: caSecrets, CA: caCfg, Authority: authority, Repair: 10 * time.Minute, Log: log,
		OnChange: func(ctx context.Context, inter *ca.Intermediate) error {
			if err := ca.PublishBundle(ctx, client, cfg.Namespace, cfg.BundleConfigMap, inter.Bundle()); err != nil {
				return err
			}
			bundles.Notify()
			svid, err := controllerca.ServingSVID(inter, controllerID, time.Hour, names)
			if err != nil {
				return err
			}
			serving.SetSVID(svid)
			serving.SetBundle(inter.Bundle())
			xds.RefreshSecrets()
			return syncInjectorCABundle(ctx, client, injectorName, inter.Bundle())
		}})
	if err != nil {
		return err
	}
	start("CA rotation", reloader.Run)
	start("memory release", func(ctx context.Context) error {
		releaseWhenQuiet(ctx, 10*time.Second, log)
		return nil
	})
	start("serving certificate", func(ctx context.Context) error {
		controllerca.RenewServing(ctx, authority, serving, controllerID, names, log)
		return nil
	})
	log.Info("meshfed-controller running", "mesh", cfg.MeshName, "cluster", ms.ClusterName, "trustDomain", ms.TrustDomain,
		"xds", cfg.XDSAddress, "issuer", cfg.IssuerAddress, "metrics", metricsLis.Addr().String())
	<-ctx.Done()
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// xdsServerTLS is trust/mtls's SPIFFE server configuration with the
// standard library's chain verification switched on as well
// (RequireAndVerifyClientCert against the current bundle), which the xDS
// server insists on. go-spiffe's configuration verifies in
// VerifyPeerCertificate only; with both, a client must pass both.
func xdsServerTLS(serving *mtls.Source, authority *ca.Authority, td spiffeid.TrustDomain) *tls.Config {
	base := mtls.ServerConfig(serving, authority, td)
	perHandshake := func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = x509.NewCertPool()
		for _, root := range authority.TrustBundle().X509Authorities() {
			c.ClientCAs.AddCert(root)
		}
		return c, nil
	}
	out := base.Clone()
	out.ClientAuth = tls.RequireAndVerifyClientCert
	out.GetConfigForClient = perHandshake
	return out
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

// readMeshConfig reads the MeshConfig, waiting for it to exist (install
// applies it before the controller's Deployment).
func readMeshConfig(ctx context.Context, dyn dynamic.Interface, cfg Config, log *slog.Logger) (meshSettings, error) {
	ms := meshSettings{ClusterName: cfg.ClusterName, TrustDomain: cfg.TrustDomain}
	var u *unstructured.Unstructured
	for {
		var err error
		u, err = dyn.Resource(kube.MeshConfigGVR).Namespace(cfg.Namespace).Get(ctx, cfg.MeshConfig, metav1.GetOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) {
			log.Warn("reading MeshConfig", "namespace", cfg.Namespace, "name", cfg.MeshConfig, "err", err)
		}
		select {
		case <-ctx.Done():
			return ms, fmt.Errorf("MeshConfig %s/%s: %w", cfg.Namespace, cfg.MeshConfig, err)
		case <-time.After(2 * time.Second):
		}
	}
	// A wrong field is reported (the watcher also records it as an Event
	// on the MeshConfig) and its default used: the controller still runs.
	spec, err := meshconfig.Parse(u)
	if err != nil {
		log.Error("MeshConfig has wrong fields; using their defaults", "namespace", cfg.Namespace, "name", cfg.MeshConfig, "err", err)
	}
	if ms.ClusterName == "" {
		ms.ClusterName = spec.ClusterName
	}
	ms.TrustDomain = spec.TrustDomainOr(ms.TrustDomain)
	ms.RootSecret, ms.IntermediateSecret = spec.Certificate.RootSecretName, spec.Certificate.IntermediateSecretName
	ms.SVIDTTL = spec.Certificate.ServiceCertValidityDuration
	if ms.ClusterName == "" {
		return ms, fmt.Errorf("MeshConfig %s/%s has no spec.clusterName and --cluster-name is not set", cfg.Namespace, cfg.MeshConfig)
	}
	return ms, nil
}

func serveMetrics(ctx context.Context, lis net.Listener, reg *prometheus.Registry, w *kube.Watcher) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { fmt.Fprintln(rw, "ok") })
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if !w.Ready() {
			http.Error(rw, "waiting for the first configuration", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ok")
	})
	return debug.Serve(ctx, lis, mux)
}
