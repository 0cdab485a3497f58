// Package portforward reaches a port of a Pod through the Kubernetes API
// server, as `kubectl port-forward` does: the API server authorizes the
// caller (create pods/portforward, RBAC) with the caller's own kubeconfig
// and carries the connection to the Pod's kubelet. meshfed's commands
// reach meshfed-controller's debug API this way; it listens only on the
// Pod's loopback.
package portforward

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// Forward is a running port forward.
type Forward struct {
	// Address is the local host:port that reaches the Pod's port.
	Address string
	stop    chan struct{}
	done    chan error
}

// Close stops the forward.
func (f *Forward) Close() error {
	close(f.stop)
	return <-f.done
}

// Start forwards a local port on 127.0.0.1 to port of Pod namespace/pod.
func Start(cfg *rest.Config, namespace, pod string, port int) (*Forward, error) {
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	base, _, err := rest.DefaultServerUrlFor(cfg)
	if err != nil {
		return nil, err
	}
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward", namespace, pod)
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, &u)
	f := &Forward{stop: make(chan struct{}), done: make(chan error, 1)}
	ready := make(chan struct{})
	var errOut strings.Builder
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, f.stop, ready, io.Discard, &errOut)
	if err != nil {
		return nil, err
	}
	go func() { f.done <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-f.done:
		if err == nil {
			err = errors.New("port forward ended")
		}
		return nil, fmt.Errorf("port-forward to %s/%s:%d: %w", namespace, pod, port, err)
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		_ = f.Close()
		return nil, fmt.Errorf("port-forward to %s/%s:%d: no local port (%v)", namespace, pod, port, err)
	}
	f.Address = fmt.Sprintf("127.0.0.1:%d", ports[0].Local)
	return f, nil
}
