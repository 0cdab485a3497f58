package trust_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/sandbox/sandboxtest"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/agent"
	"github.com/meshfed/meshfed/trust/ca"
	"github.com/meshfed/meshfed/trust/internal/kubetest"
	"github.com/meshfed/meshfed/trust/issuer"
	"github.com/meshfed/meshfed/trust/mtls"
)

const systemNS = "meshfed-system"

var controllerID = spiffeid.RequireFromString("spiffe://meshfed.local/ns/meshfed-system/sa/meshfed-controller")

// installCA does for one cluster what install and the controller do: take
// the shared root, ensure the cluster's intermediate Secret, publish the
// bundle and serve the issuer on 127.0.0.1. It returns the issuer address.
func installCA(t *testing.T, kube kubernetes.Interface, cluster string, root *ca.Root) string {
	t.Helper()
	ctx := context.Background()
	_, _ = kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNS}}, metav1.CreateOptions{})
	cfg := ca.DefaultConfig()
	cfg.ClusterName = cluster
	inter, err := ca.EnsureIntermediate(ctx, kube, systemNS, "meshfed-ca", root, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.PublishBundle(ctx, kube, systemNS, "meshfed-ca-bundle", inter.Bundle()); err != nil {
		t.Fatal(err)
	}
	serving, err := inter.IssueSVID(controllerID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	icfg := issuer.DefaultConfig()
	icfg.Namespaces = issuer.MeshNamespaces{Client: kube, MeshName: "meshfed"}
	srv, err := issuer.NewServer(icfg, ca.NewAuthority(inter), issuer.NewTokenReviewer(kube, trust.DefaultAudience), serving)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	return lis.Addr().String()
}

// runAgent runs meshfed's agent for ns/sa against one cluster's issuer, with
// the bundle from that cluster's ConfigMap, and returns the workload's
// credentials as read back from the files it wrote.
func runAgent(t *testing.T, kube kubernetes.Interface, issuerAddr, ns, sa string) *mtls.Source {
	t.Helper()
	ctx := context.Background()
	kubetest.CreateServiceAccount(t, kube, ns, sa)
	kubetest.MeshNamespace(t, kube, ns)
	dir := t.TempDir()
	cm, err := kube.CoreV1().ConfigMaps(systemNS).Get(ctx, "meshfed-ca-bundle", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bundleFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(bundleFile, []byte(cm.Data[ca.BundleKey]), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := agent.DefaultConfig()
	cfg.IssuerAddress = issuerAddr
	cfg.IssuerID = controllerID.String()
	cfg.BundleFile = bundleFile
	cfg.OutputDir = filepath.Join(dir, "certs")
	cfg.TokenSource = func(ctx context.Context) (string, error) {
		return kubetest.Token(ctx, kube, ns, sa, trust.DefaultAudience)
	}
	var once sync.Once
	ready := make(chan struct{})
	cfg.OnUpdate = func(*x509svid.SVID, *x509bundle.Bundle) { once.Do(func() { close(ready) }) }
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- agent.Run(actx, cfg) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-time.After(time.Minute):
		t.Fatalf("agent for %s/%s got no SVID", ns, sa)
	}
	svid, err := x509svid.Load(filepath.Join(cfg.OutputDir, agent.CertificateFile), filepath.Join(cfg.OutputDir, agent.PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), filepath.Join(cfg.OutputDir, agent.CACertificateFile))
	if err != nil {
		t.Fatal(err)
	}
	return mtls.NewSource(svid, bundle)
}

// TestTwoSandboxClustersSharingARootTalkMTLS installs the CA in two sandbox
// clusters, the second taking the first one's root from its API server;
// agents in each cluster obtain SVIDs through their own cluster's issuer and
// TokenReview; a grpc-go client in east then calls a server in west over
// mTLS, each trusting only its own cluster's bundle, and each side sees the
// other's SPIFFE ID.
func TestTwoSandboxClustersSharingARootTalkMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two Kubernetes control planes")
	}
	sb := sandboxtest.Start(t, "east", "west")
	east, west := sb.Cluster("east").Client(), sb.Cluster("west").Client()
	ctx := context.Background()
	_, _ = east.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: systemNS}}, metav1.CreateOptions{})

	cfg := ca.DefaultConfig()
	root, created, err := ca.LoadOrCreateRoot(ctx, east, systemNS, "meshfed-root-ca", cfg)
	if err != nil || !created {
		t.Fatalf("root in east: created=%v %v", created, err)
	}
	// west reads east's root through east's API server; the key is used
	// only to sign west's intermediate and is not stored in west.
	shared, err := ca.LoadRoot(ctx, east, systemNS, "meshfed-root-ca", root.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	eastIssuer := installCA(t, east, "east", root)
	westIssuer := installCA(t, west, "west", shared)

	buyer := runAgent(t, east, eastIssuer, "bookbuyer", "bookbuyer")
	store := runAgent(t, west, westIssuer, "bookstore", "bookstore")
	buyerSVID, _ := buyer.GetX509SVID()
	storeSVID, _ := store.GetX509SVID()
	if buyerSVID.ID.String() != "spiffe://meshfed.local/ns/bookbuyer/sa/bookbuyer" || storeSVID.ID.String() != "spiffe://meshfed.local/ns/bookstore/sa/bookstore" {
		t.Fatalf("identities: %s, %s", buyerSVID.ID, storeSVID.ID)
	}
	westBundle, _ := store.GetX509BundleForTrustDomain(buyerSVID.ID.TrustDomain())
	if _, _, err := x509svid.Verify(buyerSVID.Certificates, westBundle); err != nil {
		t.Fatalf("east's SVID against west's bundle: %v", err)
	}
	if _, err := west.CoreV1().Secrets(systemNS).Get(ctx, "meshfed-root-ca", metav1.GetOptions{}); err == nil {
		t.Fatal("west stores the root key")
	}

	var mu sync.Mutex
	var seenClient spiffeid.ID
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(mtls.ServerConfig(store, store, storeSVID.ID.TrustDomain()))),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			id, err := mtls.PeerID(ctx)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			seenClient = id
			mu.Unlock()
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
		mtls.ClientConfig(buyer, buyer, tlsconfig.AuthorizeID(storeSVID.ID)))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		t.Fatalf("east → west mTLS: %v", err)
	}
	seenServer, err := mtls.PeerIDFromState(p.AuthInfo.(credentials.TLSInfo).State)
	if err != nil || seenServer != storeSVID.ID {
		t.Fatalf("client saw %s (%v)", seenServer, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seenClient != buyerSVID.ID {
		t.Fatalf("server saw %s", seenClient)
	}
}
