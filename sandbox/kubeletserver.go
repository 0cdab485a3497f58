package sandbox

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
)

// The kubelet stand-in's API: what the API server calls a kubelet for.
// Only port forwarding is served (`kubectl port-forward`, and meshfed's
// commands that reach meshfed-controller through it), on 127.0.0.1, over
// TLS with client certificates both ways: the API server presents the
// client certificate it is started with (--kubelet-client-certificate),
// the stand-in a serving certificate for localhost that the API server
// verifies (--kubelet-certificate-authority), as a kubelet's is. The
// Node's InternalDNS address is localhost and its kubelet endpoint this
// port; the API server is told to prefer that address.

// kubeletTLS are the files of the API server ↔ kubelet trust: one CA that
// signs the kubelet's serving certificate and the API server's client one.
type kubeletTLS struct {
	CAFile, ServingCert, ServingKey, ClientCert, ClientKey string
}

// makeKubeletTLS writes a fresh CA, serving and client certificate into dir.
func makeKubeletTLS(dir string) (kubeletTLS, error) {
	f := kubeletTLS{
		CAFile:      filepath.Join(dir, "kubelet-ca.crt"),
		ServingCert: filepath.Join(dir, "kubelet-serving.crt"), ServingKey: filepath.Join(dir, "kubelet-serving.key"),
		ClientCert: filepath.Join(dir, "kubelet-client.crt"), ClientKey: filepath.Join(dir, "kubelet-client.key"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meshfed sandbox kubelet CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return f, err
	}
	if err := writePEM(f.CAFile, "CERTIFICATE", caDER); err != nil {
		return f, err
	}
	for i, leaf := range []struct {
		cert, key string
		tmpl      x509.Certificate
	}{
		{f.ServingCert, f.ServingKey, x509.Certificate{Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}},
		{f.ClientCert, f.ClientKey, x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return f, err
		}
		tmpl := leaf.tmpl
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(int64(i+2)), now.Add(-time.Hour), now.Add(10*365*24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return f, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return f, err
		}
		if err := errors.Join(writePEM(leaf.cert, "CERTIFICATE", der), writePEM(leaf.key, "PRIVATE KEY", keyDER)); err != nil {
			return f, err
		}
	}
	return f, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// serveAPI listens on 127.0.0.1 and serves the kubelet API until ctx ends.
// It returns the port.
func (k *kubelet) serveAPI(ctx context.Context, files kubeletTLS) (int, error) {
	cert, err := tls.LoadX509KeyPair(files.ServingCert, files.ServingKey)
	if err != nil {
		return 0, err
	}
	caPEM, err := os.ReadFile(files.CAFile)
	if err != nil {
		return 0, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(k.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
	}
	go func() { _ = srv.ServeTLS(lis, "", "") }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return lis.Addr().(*net.TCPAddr).Port, nil
}

func (k *kubelet) serveHTTP(w http.ResponseWriter, req *http.Request) {
	// /portForward/<namespace>/<pod>
	parts := strings.Split(strings.TrimPrefix(req.URL.Path, "/"), "/")
	if len(parts) != 3 || parts[0] != "portForward" {
		http.Error(w, "the meshfed sandbox's kubelet stand-in serves only /portForward", http.StatusNotFound)
		return
	}
	pod, err := k.pods.Pods(parts[1]).Get(parts[2])
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if k.hooks.PortForward == nil {
		http.Error(w, "this sandbox forwards no ports", http.StatusNotImplemented)
		return
	}
	if _, err := httpstream.Handshake(req, w, []string{portForwardProtocol}); err != nil {
		return // Handshake wrote the response
	}
	streams := make(chan httpstream.Stream, 4)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, req, func(s httpstream.Stream, _ <-chan struct{}) error {
		streams <- s
		return nil
	})
	if conn == nil {
		return
	}
	defer conn.Close()
	conn.SetIdleTimeout(4 * time.Hour)
	fmt.Fprintf(k.log, "%s: sandbox kubelet: port-forward to %s/%s\n", k.cluster.Name, pod.Namespace, pod.Name)
	k.forward(req.Context(), conn, streams, pod)
}

// portForwardProtocol is the port-forward subprotocol the stand-in speaks.
const portForwardProtocol = "portforward.k8s.io"

// forward pairs each forwarded connection's error and data streams (by
// their requestID) and carries the data stream to the Pod's port.
func (k *kubelet) forward(ctx context.Context, conn httpstream.Connection, streams <-chan httpstream.Stream, pod *corev1.Pod) {
	type pair struct{ data, errs httpstream.Stream }
	pairs := map[string]*pair{}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var s httpstream.Stream
		select {
		case <-conn.CloseChan():
			return
		case <-ctx.Done():
			return
		case s = <-streams:
		}
		id := s.Headers().Get(corev1.PortForwardRequestIDHeader)
		p := pairs[id]
		if p == nil {
			p = &pair{}
			pairs[id] = p
		}
		switch s.Headers().Get(corev1.StreamType) {
		case corev1.StreamTypeData:
			p.data = s
		case corev1.StreamTypeError:
			p.errs = s
		default:
			_ = s.Reset()
			continue
		}
		if p.data == nil || p.errs == nil {
			continue
		}
		delete(pairs, id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			k.forwardOne(p.data, p.errs, pod)
		}()
	}
}

func (k *kubelet) forwardOne(data, errs httpstream.Stream, pod *corev1.Pod) {
	defer data.Close()
	defer errs.Close()
	port, err := strconv.ParseInt(data.Headers().Get(corev1.PortHeader), 10, 32)
	if err != nil || port <= 0 || port > 65535 {
		fmt.Fprintf(errs, "port %q is not a port", data.Headers().Get(corev1.PortHeader))
		return
	}
	target, err := k.hooks.PortForward(k.cluster.Name, pod, int32(port))
	if err != nil {
		fmt.Fprintf(errs, "forward to port %d of Pod %s/%s: %v", port, pod.Namespace, pod.Name, err)
		return
	}
	defer target.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(target, data); closeWrite(target); done <- struct{}{} }()
	go func() { _, _ = io.Copy(data, target); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
