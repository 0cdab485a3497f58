// Package bookapp is meshfed's demo workload, a proxyless gRPC program in
// the roles of Open Service Mesh's bookstore demo:
//
//   - server (bookstore, bookwarehouse): serves the bookstore.Bookstore
//     service (BuyBook, ListBooks) through grpc-go's xDS server with xDS
//     credentials, so meshfed's RBAC and mTLS apply; every answer says which
//     pod, version and cluster served it.
//   - client (bookbuyer, bookthief): calls xds:///<target> in a loop and
//     writes one JSON line per RPC to stdout: method, status code, and the
//     backend that answered.
//
// It reads the gRPC xDS bootstrap from GRPC_XDS_BOOTSTRAP (`meshfed agent
// --bootstrap` writes it). The service is hand-written (a ServiceDesc and a
// JSON codec) so the demo needs no protobuf compiler. The image's command
// is docs/example/app; `meshfed demo` runs it as `meshfed bookapp`.
package bookapp

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
)

// jsonCodec lets the hand-written service carry JSON messages
// (content-subtype "json").
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                       { return "json" }

func init() { encoding.RegisterCodec(jsonCodec{}) }

// BookRequest asks for a book (BuyBook) or the catalogue (ListBooks).
type BookRequest struct {
	Title string `json:"title,omitempty"`
}

// BookReply says who answered.
type BookReply struct {
	Pod      string `json:"pod"`
	Version  string `json:"version"`
	Cluster  string `json:"cluster"`
	Identity string `json:"identity"`
	// Caller is the SPIFFE ID the server saw on the caller's certificate;
	// Peer the address the connection came from.
	Caller string   `json:"caller,omitempty"`
	Peer   string   `json:"peer,omitempty"`
	Books  []string `json:"books,omitempty"`
}

// Full method names; an HTTPRouteGroup's pathRegex matches these.
const (
	ServiceName = "bookstore.Bookstore"
	BuyBook     = "/" + ServiceName + "/BuyBook"
	ListBooks   = "/" + ServiceName + "/ListBooks"
)

type bookstore struct{ reply BookReply }

type bookstoreServer interface {
	buy(context.Context, *BookRequest) (*BookReply, error)
	list(context.Context, *BookRequest) (*BookReply, error)
}

func (b *bookstore) buy(ctx context.Context, req *BookRequest) (*BookReply, error) {
	r := b.reply
	r.Caller, r.Peer = peerOf(ctx)
	r.Books = []string{req.Title}
	return &r, nil
}

func (b *bookstore) list(ctx context.Context, _ *BookRequest) (*BookReply, error) {
	r := b.reply
	r.Caller, r.Peer = peerOf(ctx)
	r.Books = []string{"The Go Programming Language", "Site Reliability Engineering", "Kubernetes Patterns"}
	return &r, nil
}

func handler(call func(bookstoreServer, context.Context, *BookRequest) (*BookReply, error)) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		req := new(BookRequest)
		if err := dec(req); err != nil {
			return nil, err
		}
		return call(srv.(bookstoreServer), ctx, req)
	}
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*bookstoreServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "BuyBook", Handler: handler(bookstoreServer.buy)},
		{MethodName: "ListBooks", Handler: handler(bookstoreServer.list)},
	},
}

// Main runs the workload with the command-line arguments args (without the
// program name) until SIGTERM or SIGINT, and returns what stopped it (nil
// after a signal, flag.ErrHelp after -h).
func Main(args []string) error {
	fs := flag.NewFlagSet("bookapp", flag.ContinueOnError)
	mode := fs.String("mode", "server", "server or client")
	listen := fs.String("listen", envOr("POD_IP", "0.0.0.0")+":14001", "server: listen address; must be the pod address the mesh knows")
	target := fs.String("target", "xds:///bookstore.bookstore.svc.cluster.local:14001", "client: the service to call")
	methods := fs.String("methods", "BuyBook", "client: methods to call in turn (BuyBook, ListBooks)")
	interval := fs.Duration("interval", durationEnv("BOOKAPP_INTERVAL", time.Second), "client: pause between calls")
	version := fs.String("version", envOr("VERSION", "v1"), "server: version reported in answers")
	maxAge := fs.Duration("max-connection-age", 0, "server: end each client connection after this long (0: never), so that clients reaching it through an east-west gateway spread over the pods (docs/gateway.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch *mode {
	case "server":
		return serve(ctx, *listen, *maxAge, BookReply{Pod: os.Getenv("POD_NAME"), Version: *version, Cluster: os.Getenv("CLUSTER_NAME"), Identity: ownIdentity()})
	case "client":
		return callLoop(ctx, *target, strings.Split(*methods, ","), *interval)
	}
	return fmt.Errorf("--mode %q: want server or client", *mode)
}

func serve(ctx context.Context, addr string, maxAge time.Duration, reply BookReply) error {
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	opts := []grpc.ServerOption{grpc.Creds(creds)}
	if maxAge > 0 {
		// Calls in flight finish; the client reconnects for the next ones.
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: maxAge, MaxConnectionAgeGrace: 10 * time.Second}))
	}
	srv, err := xds.NewGRPCServer(append(opts, xds.ServingModeCallback(func(a net.Addr, args xds.ServingModeChangeArgs) {
		log.Printf("serving mode on %s: %v (%v)", a, args.Mode, args.Err)
		if args.Mode == connectivity.ServingModeServing {
			emit(map[string]any{"event": "serving", "address": a.String()})
		}
	}))...)
	if err != nil {
		return err
	}
	srv.RegisterService(&serviceDesc, &bookstore{reply: reply})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); srv.GracefulStop() }()
	log.Printf("bookstore %s serving on %s", reply.Version, lis.Addr())
	return srv.Serve(lis)
}

// peerOf returns the SPIFFE ID on the caller's verified certificate ("" if
// none) and the address its connection came from.
func peerOf(ctx context.Context) (id, addr string) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", ""
	}
	if p.Addr != nil {
		addr = p.Addr.String()
	}
	return spiffeID(p.AuthInfo), addr
}

// spiffeID is the URI SAN of the leaf certificate of a TLS peer.
func spiffeID(ai credentials.AuthInfo) string {
	info, ok := ai.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 || len(info.State.PeerCertificates[0].URIs) != 1 {
		return ""
	}
	return info.State.PeerCertificates[0].URIs[0].String()
}

// Result is one RPC as the client reports it on stdout.
type Result struct {
	Seq     int64  `json:"seq"`
	Method  string `json:"method"`
	Code    string `json:"code"`
	Error   string `json:"error,omitempty"`
	Backend string `json:"backend,omitempty"`
	Version string `json:"version,omitempty"`
	Cluster string `json:"cluster,omitempty"`
	// Server is the SPIFFE ID on the certificate the client verified;
	// Caller and Peer are what the server saw of the client (BookReply).
	Server string `json:"server,omitempty"`
	Caller string `json:"caller,omitempty"`
	Peer   string `json:"peer,omitempty"`
}

func callLoop(ctx context.Context, target string, methods []string, interval time.Duration) error {
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.CallContentSubtype("json")))
	if err != nil {
		return err
	}
	defer cc.Close()
	var seq int64
	for ctx.Err() == nil {
		for _, m := range methods {
			seq++
			method := "/" + ServiceName + "/" + strings.TrimSpace(m)
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			reply := new(BookReply)
			var p peer.Peer
			err := cc.Invoke(rctx, method, &BookRequest{Title: "Kubernetes Patterns"}, reply, grpc.Peer(&p))
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			r := Result{Seq: seq, Method: strings.TrimSpace(m), Code: status.Code(err).String()}
			if err != nil {
				r.Error = status.Convert(err).Message()
			} else {
				r.Backend, r.Version, r.Cluster = reply.Pod, reply.Version, reply.Cluster
				r.Server, r.Caller, r.Peer = spiffeID(p.AuthInfo), reply.Caller, reply.Peer
			}
			emit(r)
		}
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
	return nil
}

var stdout sync.Mutex

func emit(v any) {
	b, _ := json.Marshal(v)
	stdout.Lock()
	defer stdout.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// ownIdentity reads the SPIFFE ID from the certificate meshfed agent wrote
// (MESHFED_CERT_DIR), for the answers; empty if unknown.
func ownIdentity() string {
	dir := os.Getenv("MESHFED_CERT_DIR")
	if dir == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(dir, "certificate.pem"))
	if err != nil {
		return ""
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return ""
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || len(c.URIs) == 0 {
		return ""
	}
	return c.URIs[0].String()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func durationEnv(k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(k)); err == nil {
		return d
	}
	return def
}
