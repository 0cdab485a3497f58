package federation

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshfed/meshfed/federation/catalog"
	"github.com/meshfed/meshfed/mesh"
)

// SigningIdentity gives the key this cluster signs its catalog with. The
// leaf certificate (chain[0]) must chain to the federation's trust roots and
// carry exactly one URI SAN, catalog.ClusterID(trustDomain, clusterName).
//
// It is called from the federation's own goroutine on every publication; it
// must not block for long and must not call back into the Federation.
type SigningIdentity interface {
	CatalogSigner() (crypto.Signer, []*x509.Certificate, error)
}

// TrustBundle gives the federation's current trust roots and a fingerprint
// of them (hex SHA-256, shown by `meshfed cluster list`). It is called from
// the federation's own goroutine for every catalog it verifies; it must not
// block and must not call back into the Federation.
type TrustBundle interface {
	X509Roots() (roots *x509.CertPool, fingerprint string)
}

// StaticSigner is a SigningIdentity that never rotates.
type StaticSigner struct {
	Key   crypto.Signer
	Chain []*x509.Certificate
}

// CatalogSigner implements SigningIdentity.
func (s StaticSigner) CatalogSigner() (crypto.Signer, []*x509.Certificate, error) {
	if s.Key == nil || len(s.Chain) == 0 {
		return nil, nil, errors.New("static signer: no key or chain")
	}
	return s.Key, s.Chain, nil
}

// StaticBundle is a TrustBundle that never rotates.
type StaticBundle struct {
	Roots       *x509.CertPool
	Fingerprint string
}

// X509Roots implements TrustBundle.
func (b StaticBundle) X509Roots() (*x509.CertPool, string) { return b.Roots, b.Fingerprint }

// Config configures one cluster's federation member. Build it with
// DefaultConfig and check it with Validate.
type Config struct {
	// ClusterName is this cluster's name: a DNS label, unique in the
	// federation, and the memberlist node name. Required.
	ClusterName string
	// Network names the network this cluster's endpoints are on.
	Network string
	// Gateways are the addresses (IP:port) of this cluster's east-west
	// gateway, published in its catalog for clusters on other networks.
	Gateways []string
	// TrustDomain is the federation's SPIFFE trust domain. Required.
	TrustDomain string

	// BindAddr is the IP address gossip listens on (UDP and TCP).
	// Default "0.0.0.0".
	BindAddr string
	// BindPort is the gossip port (UDP and TCP). Default 7946; 0 picks a
	// free port (tests).
	BindPort int
	// AdvertiseAddr is the IP address other members reach this one at.
	// Empty: memberlist picks the bind address, or a private address of
	// this host when bound to 0.0.0.0.
	AdvertiseAddr string
	// AdvertisePort is the port advertised to other members. 0: the bound
	// port.
	AdvertisePort int
	// Seeds are "host:port" addresses of existing members to join through.
	// Empty: this member starts a new federation.
	Seeds []string
	// JoinRetryInterval is how long to wait between attempts to join the
	// seeds while none answers, and how often a member that sees no peer
	// tries them again. Default 5 s.
	JoinRetryInterval time.Duration

	// GossipKeys are the AES keys (16, 24 or 32 bytes each) gossip is
	// encrypted with; the first is the primary, used to encrypt, the rest
	// are accepted for decryption (rotation). At least one is required:
	// meshfed never gossips in the clear. Rotate with SetGossipKeys.
	GossipKeys [][]byte

	// Signer signs this cluster's catalog. Required.
	Signer SigningIdentity
	// Bundle verifies other clusters' catalogs. Required.
	Bundle TrustBundle

	// WithdrawAfter is how long a remote cluster's services stay in the
	// view after its member is declared dead, has left, or its catalog
	// went stale. Default 30 s: memberlist needs ~5-9 s to declare a
	// member dead (LAN profile, 3-50 members), and a restarted controller
	// pod (image cached, informers synced, rejoined) is typically back
	// within 30 s, so a controller restart does not withdraw traffic while
	// a lost cluster is withdrawn within ~40 s. Clients eject failing
	// endpoints earlier on their own (outlier detection).
	WithdrawAfter time.Duration
	// StaleAfter is how long a newer catalog version may be claimed
	// (announced, or in a peer's digest) without this member obtaining it
	// before the catalog it holds counts as stale. The owner answering a
	// fetch with nothing newer ends the wait, so a claim the owner never
	// made cannot make a live cluster stale. Keep it above FetchTimeout.
	// Default 15 s.
	StaleAfter time.Duration
	// FailStatic keeps a remote cluster's services while its member is
	// dead or its catalog stale, instead of withdrawing them. Default
	// false. A service's own flag in its catalog overrides it.
	FailStatic bool
	// FailStaticClusters overrides FailStatic per remote cluster name.
	FailStaticClusters map[string]bool

	// MaxCatalogBytes is the largest signed, compressed catalog accepted
	// or published, in bytes. Default 16 MiB, under memberlist's 20 MB
	// stream limit.
	MaxCatalogBytes int
	// MaxInflatedCatalogBytes is the largest catalog accepted after
	// decompression, in bytes. Default 64 MiB; never more than
	// catalog.InflateRatio times MaxCatalogBytes. Services, endpoints and
	// strings are bounded as well while decoding (catalog.DefaultLimits).
	MaxInflatedCatalogBytes int64
	// MaxDeltaBytes is the largest encoded catalog delta accepted or
	// sent, in bytes, checked before it is decoded. A change that does not
	// fit travels as the whole catalog. 0: 1 MiB (a thousand services'
	// worth of changes); never more than MaxCatalogBytes.
	MaxDeltaBytes int
	// MaxDeltaServices is the most services one delta may add, change or
	// remove, checked while decoding and before applying. 0: 1,000.
	MaxDeltaServices int
	// DeltaHistory is how many recent versions of a catalog a member
	// keeps deltas for, so that a member a few versions behind receives
	// only the changes; one further behind receives the whole catalog.
	// 0: 16.
	DeltaHistory int
	// RestartGrace is how long other members keep this cluster's catalog
	// after it left to restart with new settings (MarkRestart), waiting
	// for the new member to publish, before withdrawing it. It is the
	// receiver's setting. Default 2 min: a member restarts in seconds, but
	// the new member publishes only once the controller's informers have
	// synced.
	RestartGrace time.Duration
	// EpochStore keeps this cluster's catalog epoch across restarts, so
	// that catalog versions keep increasing without a clock (see
	// EpochStore). Nil: a MemoryEpochStore, so after a restart the epoch
	// is recovered from the peers, which delays the first catalog of the
	// new run until a peer's digest arrives.
	EpochStore EpochStore

	// FetchTimeout is how long to wait for a requested catalog before
	// asking another member. Default 5 s.
	FetchTimeout time.Duration
	// LeaveTimeout bounds the graceful leave when Run's context ends.
	// Default 5 s.
	LeaveTimeout time.Duration
	// DeadNameReclaimAfter lets a member come back under its name from a
	// new address once the old one has been dead this long (a restarted
	// pod gets a new IP). Default 1 s.
	DeadNameReclaimAfter time.Duration

	// Tune, if set, adjusts memberlist's configuration (based on
	// memberlist.DefaultLANConfig) after meshfed has filled it in. For
	// tests and benchmarks; it must not replace the delegates, transport,
	// name or keyring.
	Tune func(*memberlist.Config)

	// Now is the clock catalogs are stamped with (GeneratedAt); nil:
	// time.Now. Versions never come from it. For tests of clock changes.
	Now func() time.Time

	// Registerer receives the federation's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives the federation's and memberlist's logs; nil
	// discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default filled in; callers set
// the required fields.
func DefaultConfig() Config {
	return Config{
		BindAddr:                "0.0.0.0",
		BindPort:                7946,
		JoinRetryInterval:       5 * time.Second,
		WithdrawAfter:           30 * time.Second,
		StaleAfter:              15 * time.Second,
		MaxCatalogBytes:         16 << 20,
		MaxInflatedCatalogBytes: 64 << 20,
		FetchTimeout:            5 * time.Second,
		RestartGrace:            2 * time.Minute,
		LeaveTimeout:            5 * time.Second,
		DeadNameReclaimAfter:    time.Second,
		MaxDeltaBytes:           defaultMaxDeltaBytes,
		MaxDeltaServices:        defaultMaxDeltaServices,
		DeltaHistory:            defaultDeltaHistory,
	}
}

// Defaults of the delta settings, which also replace zero values, so that
// configurations written before deltas existed keep working.
const (
	defaultMaxDeltaBytes    = 1 << 20
	defaultMaxDeltaServices = 1000
	defaultDeltaHistory     = 16
)

// withDeltaDefaults returns c with zero delta settings set to their
// defaults.
func (c Config) withDeltaDefaults() Config {
	if c.MaxDeltaBytes == 0 {
		c.MaxDeltaBytes = defaultMaxDeltaBytes
	}
	if c.MaxDeltaServices == 0 {
		c.MaxDeltaServices = defaultMaxDeltaServices
	}
	if c.DeltaHistory == 0 {
		c.DeltaHistory = defaultDeltaHistory
	}
	return c
}

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !catalog.ValidClusterName(c.ClusterName) {
		bad("clusterName %q: must be a DNS label (lower case letters, digits, '-', at most 63)", c.ClusterName)
	}
	if c.TrustDomain == "" {
		bad("trustDomain: required")
	}
	if len(c.Gateways) > catalog.MaxGateways {
		bad("gateways: %d addresses, at most %d", len(c.Gateways), catalog.MaxGateways)
	}
	for _, g := range c.Gateways {
		if err := mesh.CheckGatewayAddress(g); err != nil {
			bad("gateways: %q: %v", g, err)
		}
	}
	if net.ParseIP(c.BindAddr) == nil {
		bad("bindAddr %q: not an IP address", c.BindAddr)
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		bad("bindPort %d: out of range", c.BindPort)
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		bad("advertiseAddr %q: not an IP address", c.AdvertiseAddr)
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		bad("advertisePort %d: out of range", c.AdvertisePort)
	}
	for _, s := range c.Seeds {
		if _, _, err := net.SplitHostPort(s); err != nil {
			bad("seed %q: want host:port: %v", s, err)
		}
	}
	if len(c.GossipKeys) == 0 {
		bad("gossipKeys: at least one key is required (gossip is always encrypted)")
	}
	for i, k := range c.GossipKeys {
		if err := memberlist.ValidateKey(k); err != nil {
			bad("gossipKeys[%d]: %v", i, err)
		}
	}
	if c.Signer == nil {
		bad("signer: required")
	}
	if c.Bundle == nil {
		bad("bundle: required")
	}
	positive := map[string]time.Duration{
		"joinRetryInterval": c.JoinRetryInterval, "withdrawAfter": c.WithdrawAfter,
		"staleAfter": c.StaleAfter, "fetchTimeout": c.FetchTimeout, "leaveTimeout": c.LeaveTimeout,
		"deadNameReclaimAfter": c.DeadNameReclaimAfter, "restartGrace": c.RestartGrace,
	}
	for _, name := range []string{"joinRetryInterval", "withdrawAfter", "staleAfter", "fetchTimeout", "leaveTimeout", "deadNameReclaimAfter", "restartGrace"} {
		if positive[name] <= 0 {
			bad("%s %v: must be positive", name, positive[name])
		}
	}
	if c.MaxCatalogBytes <= 0 || c.MaxCatalogBytes > 20*1000*1000-64*1024 {
		bad("maxCatalogBytes %d: must be positive and below memberlist's 20 MB stream limit", c.MaxCatalogBytes)
	}
	if c.MaxInflatedCatalogBytes <= 0 {
		bad("maxInflatedCatalogBytes %d: must be positive", c.MaxInflatedCatalogBytes)
	}
	if c.MaxDeltaBytes < 0 {
		bad("maxDeltaBytes %d: must be 0 (default) or positive", c.MaxDeltaBytes)
	}
	if c.MaxDeltaServices < 0 {
		bad("maxDeltaServices %d: must be 0 (default) or positive", c.MaxDeltaServices)
	}
	if c.DeltaHistory < 0 {
		bad("deltaHistory %d: must be 0 (default) or positive", c.DeltaHistory)
	}
	return errors.Join(errs...)
}

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// failStatic decides whether svc of cluster is kept while its owner is
// down: the service's own flag wins, then the per-cluster setting, then the
// default.
func (c *Config) failStatic(cluster string, svc *catalog.ExportedService) bool {
	if svc.FailStatic != nil {
		return *svc.FailStatic
	}
	if v, ok := c.FailStaticClusters[cluster]; ok {
		return v
	}
	return c.FailStatic
}
