package federate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/controller/kube"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
)

// Federation is what the bridge needs of a federation member;
// *federation.Federation implements it. PublishWithGateways may block until
// the member runs (see federation.Federation.Publish); Subscribe and
// Snapshot never block.
type Federation interface {
	PublishWithGateways(ctx context.Context, services []catalog.ExportedService, gateways []string) (uint64, error)
	Subscribe() (<-chan struct{}, func())
	Snapshot() *federation.RemoteView
}

// GatewayPresence is what the bridge needs to know of the cluster's
// east-west gateway; *server.Server implements it.
type GatewayPresence interface {
	// GatewaysConnected is how many gateway replicas are connected.
	GatewaysConnected() int
	// GatewayChanges receives a value when that may have changed.
	GatewayChanges() <-chan struct{}
}

// Config configures a Bridge.
type Config struct {
	// Client and Dynamic talk to the local cluster's API server.
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Federation is this cluster's federation member.
	Federation Federation

	// ClusterName is this cluster's name in the federation. Required.
	ClusterName string
	// Network is the network this cluster's pod addresses are on.
	Network string
	// Gateways are this cluster's east-west gateway addresses. They are
	// published while Presence says a gateway serves (always, with no
	// Presence), and shown in the cluster's status. Empty: the addresses
	// are read from the load balancer status of Service GatewayService in
	// Namespace (IP ingress points, the Service's port), if there is one.
	Gateways []string
	// GatewayService is the gateway's Service. Default "meshfed-gateway".
	GatewayService string
	// Presence says whether this cluster's gateway is serving: the xDS
	// server counts its open ADS streams. Nil: the gateways are always
	// published.
	Presence GatewayPresence
	// GatewayGrace is how long after the bridge starts the gateways are
	// published before any replica has connected (a controller that
	// restarts does not withdraw its cluster while its gateways
	// reconnect). Default 10 s.
	GatewayGrace time.Duration
	// TrustDomain makes endpoint identities from Pods' ServiceAccounts.
	// Required.
	TrustDomain string

	// Namespace and MeshConfigName locate the MeshConfig whose
	// status.federation the bridge keeps up to date for `meshfed cluster
	// list`. Empty MeshConfigName: no status is written.
	Namespace      string
	MeshConfigName string
	// Board, if set, receives the members' status as the bridge computes
	// it (the debug API's live view).
	Board *StatusBoard
	// StatusInterval is how often members are written into the MeshConfig
	// status even when nothing changed (last contact moves). Default 10 s.
	StatusInterval time.Duration

	// WriteImports makes the bridge create, update and delete
	// ServiceImports. Default true.
	WriteImports bool

	// Debounce is how long the bridge waits for a burst of changes to end;
	// MaxDelay bounds the wait from the burst's first change. Defaults
	// 100 ms and 1 s.
	Debounce time.Duration
	MaxDelay time.Duration
	// Resync is how often everything is reconciled even with no change,
	// and the informers' resync period. Default 5 min.
	Resync time.Duration
	// WriteBudget is how many writes to the API server (ServiceExport
	// status, ServiceImports) one pass makes at most; the rest wait for
	// the next pass, which follows at once. A pass so stays short and a
	// remote change that arrives while thousands of ServiceImports are
	// written waits for one pass, not for all of them. Default 25 (a
	// ServiceImport is two requests: under a second at the controller's
	// default 50 requests per second).
	WriteBudget int

	// Registerer receives the bridge's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives reports and failures; nil discards them.
	Logger *slog.Logger
	// Component is the source of the Events the bridge records.
	// Default "meshfed-controller".
	Component string
	// Informers, if set, are the controller's shared informers
	// (kube.NewInformers), started by their owner: the bridge adds its
	// handlers and removes them when Run returns. If nil, the bridge makes
	// and runs its own.
	Informers *kube.Informers
}

// DefaultConfig returns a Config with every default filled in; Client,
// Dynamic, Federation, ClusterName and TrustDomain must still be set.
func DefaultConfig() Config {
	return Config{
		Network:        mesh.DefaultNetwork,
		Namespace:      "meshfed-system",
		MeshConfigName: "meshfed-mesh-config",
		StatusInterval: 10 * time.Second,
		WriteImports:   true,
		Debounce:       100 * time.Millisecond,
		MaxDelay:       time.Second,
		Resync:         5 * time.Minute,
		WriteBudget:    25,
		GatewayGrace:   10 * time.Second,
		GatewayService: "meshfed-gateway",
		Component:      "meshfed-controller",
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("federate: Client is nil"))
	}
	if c.Dynamic == nil {
		errs = append(errs, errors.New("federate: Dynamic is nil"))
	}
	if c.Federation == nil {
		errs = append(errs, errors.New("federate: Federation is nil"))
	}
	if !catalog.ValidClusterName(c.ClusterName) {
		errs = append(errs, fmt.Errorf("federate: ClusterName %q: not a DNS label", c.ClusterName))
	}
	if c.TrustDomain == "" {
		errs = append(errs, errors.New("federate: TrustDomain is empty"))
	}
	if c.MeshConfigName != "" && c.Namespace == "" {
		errs = append(errs, errors.New("federate: MeshConfigName is set but Namespace is empty"))
	}
	if (c.MeshConfigName != "" || c.Board != nil) && c.StatusInterval <= 0 {
		errs = append(errs, fmt.Errorf("federate: StatusInterval %v: must be positive", c.StatusInterval))
	}
	if c.Debounce <= 0 {
		errs = append(errs, fmt.Errorf("federate: Debounce %v: must be positive", c.Debounce))
	}
	if c.MaxDelay < c.Debounce {
		errs = append(errs, fmt.Errorf("federate: MaxDelay %v: must be at least Debounce %v", c.MaxDelay, c.Debounce))
	}
	if c.WriteBudget < 1 {
		errs = append(errs, fmt.Errorf("federate: WriteBudget %d: must be positive", c.WriteBudget))
	}
	if c.Resync <= 0 {
		errs = append(errs, fmt.Errorf("federate: Resync %v: must be positive", c.Resync))
	}
	return errors.Join(errs...)
}
