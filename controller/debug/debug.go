// Package debug is meshfed-controller's debug API: what each connected
// proxy was sent and whether it accepted it, and the configuration served
// to it. The controller serves it on its Pod's loopback only
// (deploy.PortDebug), so it is never open on the network: users reach it
// through the Kubernetes API server with their own kubeconfig, by port
// forwarding (Dial), which RBAC authorizes (create pods/portforward on the
// controller's Pod). Secrets are shown as metadata only: names, SPIFFE
// IDs, expiry; never a key.
package debug

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshfed/meshfed/controller/federate"
	"github.com/meshfed/meshfed/controller/xds/server"
	"github.com/meshfed/meshfed/trust/ca"
)

// Paths of the debug API.
const (
	PathProxies = "/debug/proxies"
	PathConfig  = "/debug/config" // ?key=<proxy key>
	// PathFederation is the federation's members as this cluster sees
	// them now (Federation).
	PathFederation = "/debug/federation"
	// PathProfiles is the Go runtime's profiles of the controller
	// (net/http/pprof): CPU (profile?seconds=N), heap, goroutines,
	// execution trace. Reached like the rest of the debug API, so RBAC
	// decides who may take them.
	PathProfiles = "/debug/pprof/"
)

// Source is what the debug API reads: the controller's xDS server.
type Source interface {
	Proxies() []server.ProxyStatus
	Resources(key string) (map[string]map[string]types.Resource, error)
	StateSource
}

// FederationSource is the federation's live status (federate.StatusBoard).
type FederationSource interface {
	Load() (federate.Status, bool)
}

// Federation is the answer of PathFederation.
type Federation struct {
	Cluster string `json:"cluster"`
	// Federated is false while this cluster's federation is off.
	Federated bool            `json:"federated"`
	Status    federate.Status `json:"status"`
	// Now is the controller's wall clock when it answered: `meshfed
	// check` compares it with its own to find clock skew between members.
	Now time.Time `json:"now,omitzero"`
}

// Proxies is the answer of PathProxies.
type Proxies struct {
	Cluster string               `json:"cluster"`
	Proxies []server.ProxyStatus `json:"proxies"`
}

// Config is the answer of PathConfig: the resources served to one proxy
// key, by short type (lds, rds, cds, eds, sds), each as its protobuf JSON;
// secrets as SecretInfo.
type Config struct {
	Cluster   string                       `json:"cluster"`
	Key       string                       `json:"key"`
	Resources map[string][]json.RawMessage `json:"resources"`
}

// SecretInfo is what the debug API shows of a secret.
type SecretInfo struct {
	Name string `json:"name"`
	// SPIFFEID and NotAfter are the certificate's, for an identity;
	// Roots the trust bundle's root fingerprints, for a validation
	// context.
	SPIFFEID string    `json:"spiffeID,omitempty"`
	NotAfter time.Time `json:"notAfter,omitzero"`
	Roots    []string  `json:"roots,omitempty"`
}

// ShortTypes maps the type URLs the debug API shows to their short names.
var ShortTypes = map[string]string{
	resourcev3.ListenerType: "lds", resourcev3.RouteType: "rds", resourcev3.ClusterType: "cds",
	resourcev3.EndpointType: "eds", resourcev3.SecretType: "sds",
}

// Handler serves the debug API for cluster from src and fed.
func Handler(cluster string, src Source, fed FederationSource) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathFederation, func(w http.ResponseWriter, _ *http.Request) {
		st, ok := fed.Load()
		writeJSON(w, Federation{Cluster: cluster, Federated: ok, Status: st, Now: time.Now()})
	})
	mux.HandleFunc("GET "+PathMesh, func(w http.ResponseWriter, _ *http.Request) {
		st, ok := src.State()
		if !ok {
			http.Error(w, "the controller has not built its first configuration yet", http.StatusServiceUnavailable)
			return
		}
		fs, federated := fed.Load()
		writeJSON(w, View(cluster, st, fs, federated))
	})
	// The web view: static files that read PathMesh. Nothing but this
	// origin's own files and API may be used by the page.
	files := http.FileServerFS(webFiles())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { serveWeb(w, r, files) })
	mux.HandleFunc("GET /app.js", func(w http.ResponseWriter, r *http.Request) { serveWeb(w, r, files) })
	mux.HandleFunc("GET "+PathProxies, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, Proxies{Cluster: cluster, Proxies: src.Proxies()})
	})
	mux.HandleFunc("GET "+PathConfig, func(w http.ResponseWriter, r *http.Request) {
		key := r.URL.Query().Get("key")
		res, err := src.Resources(key)
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		out := Config{Cluster: cluster, Key: key, Resources: map[string][]json.RawMessage{}}
		for url, byName := range res {
			short := ShortTypes[url]
			for _, name := range sortedNames(byName) {
				b, err := render(url, byName[name])
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				out.Resources[short] = append(out.Resources[short], b)
			}
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET "+PathProfiles, pprof.Index)
	mux.HandleFunc("GET "+PathProfiles+"cmdline", pprof.Cmdline)
	mux.HandleFunc("GET "+PathProfiles+"profile", pprof.Profile)
	mux.HandleFunc("GET "+PathProfiles+"symbol", pprof.Symbol)
	mux.HandleFunc("GET "+PathProfiles+"trace", pprof.Trace)
	return mux
}

// render is a resource as JSON; a secret as its SecretInfo only.
func render(url string, r types.Resource) (json.RawMessage, error) {
	if url != resourcev3.SecretType {
		return protojson.Marshal(r)
	}
	s, ok := r.(*tlsv3.Secret)
	if !ok {
		return nil, errors.New("a secret that is not a Secret")
	}
	info := SecretInfo{Name: s.GetName()}
	if tc := s.GetTlsCertificate(); tc != nil {
		if certs, err := ca.ParseCertificatesPEM(tc.GetCertificateChain().GetInlineBytes()); err == nil && len(certs) > 0 {
			info.NotAfter = certs[0].NotAfter
			if len(certs[0].URIs) > 0 {
				info.SPIFFEID = certs[0].URIs[0].String()
			}
		}
	}
	if vc := s.GetValidationContext(); vc != nil {
		if roots, err := ca.ParseCertificatesPEM(vc.GetTrustedCa().GetInlineBytes()); err == nil {
			for _, c := range roots {
				info.Roots = append(info.Roots, ca.Fingerprint(c))
			}
		}
	}
	return json.Marshal(info)
}

func sortedNames(m map[string]types.Resource) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

//go:embed web
var web embed.FS

func webFiles() fs.FS {
	sub, err := fs.Sub(web, "web")
	if err != nil {
		panic(err) // the embedded directory is there
	}
	return sub
}

func serveWeb(w http.ResponseWriter, r *http.Request, files http.Handler) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	files.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Serve serves h over HTTP on lis until ctx ends (then shuts down within
// 5 s). The controller's metrics endpoint is served the same way.
func Serve(ctx context.Context, lis net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
