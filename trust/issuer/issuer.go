// Package issuer is meshfed's authenticated certificate endpoint: a gRPC
// service over TLS where a workload sends a CSR it made itself, with its
// projected ServiceAccount token (audience "meshfed") as a bearer token. The
// server checks the token with TokenReview in its own cluster, takes the
// namespace and ServiceAccount from the review, checks that the namespace is
// part of the mesh, and signs an X.509-SVID for exactly
// spiffe://<td>/ns/<ns>/sa/<sa>. A CSR naming anything else is refused; so
// is a token that is expired, revoked or for another audience, and a caller
// in a namespace the mesh does not monitor (kube-system, say).
//
// The wire format is a hand-written gRPC service ("meshfed.trust.v1.Issuer",
// method "Sign") whose messages are JSON (content-subtype "json"), because no
// protobuf compiler is part of meshfed's build. Any gRPC client that can send
// JSON frames can use it; Client does it for Go.
//
// The issuer listens on its own port: its clients have no certificate yet, so
// it cannot share a listener with the mTLS-only xDS server.
package issuer

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/ca"
)

// SignRequest asks for an SVID. The caller's identity is not in the request:
// it comes from the bearer token in the "authorization" metadata.
type SignRequest struct {
	// CSR is a PKCS#10 certificate request in DER, made by the workload with
	// a key that never leaves it. It may carry no SAN, or exactly the
	// caller's SPIFFE ID as its URI SAN.
	CSR []byte `json:"csr"`
}

// SignResponse carries the SVID and the trust bundle.
type SignResponse struct {
	// SPIFFEID is the identity the certificate was issued for.
	SPIFFEID string `json:"spiffe_id"`
	// CertificateChain is the SVID followed by the issuing CA chain (DER).
	CertificateChain [][]byte `json:"certificate_chain"`
	// TrustBundle is every root the cluster trusts (DER).
	TrustBundle [][]byte `json:"trust_bundle"`
	// ExpiresAt is the SVID's NotAfter.
	ExpiresAt time.Time `json:"expires_at"`
}

const (
	// ServiceName is the gRPC service name.
	ServiceName = "meshfed.trust.v1.Issuer"
	// SignMethod is the full method name of Sign.
	SignMethod = "/" + ServiceName + "/Sign"
	// maxMessageBytes bounds requests; a CSR is well under 4 KiB.
	maxMessageBytes = 64 << 10
)

// jsonCodec is the gRPC codec of the issuer service. It is set per server
// and per call (ForceServerCodec/ForceCodec), not registered globally.
type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) Name() string                       { return "json" }

// Signer signs CSRs for an identity the issuer has authenticated.
// *ca.Authority implements it. Called concurrently from request goroutines;
// must not block for long.
type Signer interface {
	TrustDomain() spiffeid.TrustDomain
	SignCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error)
	TrustBundle() *x509bundle.Bundle
}

// Caller is an authenticated ServiceAccount.
type Caller struct {
	Namespace      string
	ServiceAccount string
	// Pod is the name of the Pod the token is bound to, if any (for logs).
	Pod string
}

// Authenticator turns a bearer token into a Caller. It returns an error
// wrapping ErrUnauthenticated when the token is not acceptable, and any other
// error when it could not decide (e.g. the API server is unreachable).
// Called concurrently from request goroutines; may block on the network.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Caller, error)
}

// ErrUnauthenticated marks tokens that are refused.
var ErrUnauthenticated = errors.New("token not accepted")

// Config configures the issuer server.
type Config struct {
	// Address is where Run listens, host:port.
	Address string
	// SVIDTTL is the lifetime of issued SVIDs.
	SVIDTTL time.Duration
	// ReviewTimeout bounds one TokenReview call (and the namespace check).
	ReviewTimeout time.Duration
	// Namespaces decides which namespaces may get SVIDs: those of the mesh
	// (MeshNamespaces). Required.
	Namespaces NamespacePolicy
	// Gateway, if set, is the one ServiceAccount outside the mesh's
	// namespaces that gets SVIDs: the east-west gateway's, in the control
	// plane's namespace. No other account of that namespace does.
	Gateway *ServiceAccount
	// Log receives one line per refused or failed request; nil discards.
	Log *slog.Logger
}

// ServiceAccount names a Kubernetes ServiceAccount.
type ServiceAccount struct {
	Namespace, Name string
}

// DefaultConfig listens on :9443 and issues 24 h SVIDs.
func DefaultConfig() Config {
	return Config{Address: ":9443", SVIDTTL: 24 * time.Hour, ReviewTimeout: 10 * time.Second}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs = append(errs, fmt.Errorf("issuer address %q: %w", c.Address, err))
	}
	if c.SVIDTTL < time.Minute {
		errs = append(errs, fmt.Errorf("SVID TTL %v: must be at least 1m", c.SVIDTTL))
	}
	if c.ReviewTimeout <= 0 {
		errs = append(errs, fmt.Errorf("review timeout %v: must be positive", c.ReviewTimeout))
	}
	if c.Namespaces == nil {
		errs = append(errs, errors.New("no namespace policy: the issuer signs only for the mesh's namespaces (set Namespaces)"))
	}
	return errors.Join(errs...)
}

// Server is the issuer. It serves TLS with the certificate from serving (an
// SVID from the cluster's CA, so clients verify it with the trust bundle).
type Server struct {
	cfg     Config
	signer  Signer
	authn   Authenticator
	serving x509svid.Source
	log     *slog.Logger
}

// NewServer returns an issuer; it does not listen until Serve or Run.
func NewServer(cfg Config, signer Signer, authn Authenticator, serving x509svid.Source) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if signer == nil || authn == nil || serving == nil {
		return nil, errors.New("issuer: signer, authenticator and serving certificate source are required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Server{cfg: cfg, signer: signer, authn: authn, serving: serving, log: log}, nil
}

// Run listens on cfg.Address and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("issuer: listen %s: %w", s.cfg.Address, err)
	}
	return s.Serve(ctx, lis)
}

// Serve serves on lis until ctx ends, then stops gracefully and returns
// after every request has finished. It closes lis.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	tlsCfg := tlsconfig.TLSServerConfig(s.serving)
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.ForceServerCodec(jsonCodec{}),
		grpc.MaxRecvMsgSize(maxMessageBytes),
	)
	srv.RegisterService(&serviceDesc, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		srv.GracefulStop()
	}()
	err := srv.Serve(lis)
	if ctx.Err() == nil {
		srv.Stop()
	}
	<-done
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("issuer: serve %s: %w", lis.Addr(), err)
	}
	return nil
}

// signService is the handler type of serviceDesc.
type signService interface {
	sign(ctx context.Context, req *SignRequest) (*SignResponse, error)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*signService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Sign",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			req := new(SignRequest)
			if err := dec(req); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(signService).sign(ctx, req)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: SignMethod}
			return interceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
				return srv.(signService).sign(ctx, req.(*SignRequest))
			})
		},
	}},
	Metadata: "meshfed/trust/issuer (JSON messages)",
}

func (s *Server) sign(ctx context.Context, req *SignRequest) (*SignResponse, error) {
	token, err := bearerToken(ctx)
	if err != nil {
		s.log.Info("issuer: refused request", "reason", err)
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.ReviewTimeout)
	caller, err := s.authn.Authenticate(rctx, token)
	cancel()
	if err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			s.log.Info("issuer: refused token", "reason", err)
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		s.log.Warn("issuer: could not review token", "err", err)
		return nil, status.Errorf(codes.Unavailable, "cannot review token: %v", err)
	}
	id, err := trust.WorkloadID(s.signer.TrustDomain(), caller.Namespace, caller.ServiceAccount)
	if err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	gateway := s.cfg.Gateway != nil && *s.cfg.Gateway == ServiceAccount{Namespace: caller.Namespace, Name: caller.ServiceAccount}
	err = nil
	if !gateway {
		nctx, cancel := context.WithTimeout(ctx, s.cfg.ReviewTimeout)
		err = s.cfg.Namespaces.Meshed(nctx, caller.Namespace)
		cancel()
	}
	switch {
	case errors.Is(err, ErrNotMeshed):
		s.log.Warn("issuer: refused caller outside the mesh", "caller", id, "pod", caller.Pod, "reason", err)
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case err != nil:
		s.log.Warn("issuer: could not check the caller's namespace", "caller", id, "err", err)
		return nil, status.Errorf(codes.Unavailable, "cannot check namespace %q: %v", caller.Namespace, err)
	}
	chain, err := s.signer.SignCSR(req.CSR, id, s.cfg.SVIDTTL)
	switch {
	case errors.Is(err, ca.ErrIdentityMismatch):
		s.log.Warn("issuer: refused CSR for another identity", "caller", id, "pod", caller.Pod, "err", err)
		return nil, status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ca.ErrInvalidCSR):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case err != nil:
		s.log.Error("issuer: signing failed", "caller", id, "err", err)
		return nil, status.Errorf(codes.Internal, "signing failed for %s", id)
	}
	resp := &SignResponse{SPIFFEID: id.String(), ExpiresAt: chain[0].NotAfter}
	for _, c := range chain {
		resp.CertificateChain = append(resp.CertificateChain, c.Raw)
	}
	for _, r := range s.signer.TrustBundle().X509Authorities() {
		resp.TrustBundle = append(resp.TrustBundle, r.Raw)
	}
	return resp, nil
}

func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return "", errors.New("request carries no bearer token (authorization metadata)")
	}
	token, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || token == "" {
		return "", errors.New("authorization metadata is not \"Bearer <token>\"")
	}
	return token, nil
}
