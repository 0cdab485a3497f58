package generate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Outlier detection: every Envoy sidecar ejects, on its own, an endpoint
// that fails most of its requests — a pod that is up and ready but broken,
// or an endpoint of a cluster that is lost and not yet withdrawn by
// federation. Success-rate ejection is off (it needs five hosts and a
// statistical spread) and so is the consecutive-5xx rule; the
// failure-percentage rule counts 5xx answers and connection failures, not
// a 403 from an RBAC denial.
//
// Proxyless gRPC clusters carry none. grpc-go supports only success-rate
// and failure-percentage ejection (gRFC A50; DESIGN.md, Known traps) and
// counts every RPC that ends with an error as a failure, PermissionDenied
// included: a client that makes both allowed and denied calls (bookbuyer's
// BuyBook and ListBooks) would eject the endpoints that happened to receive
// its denied calls — measured here: with round robin over an even number of
// endpoints, strictly alternating calls send every denied call to the same
// endpoints, which were ejected for 15 s and more. grpc-go's round robin
// already skips endpoints it cannot connect to, so a lost cluster's
// endpoints get no RPCs once their connections fail; what outlier detection
// would add (ejecting endpoints that accept connections but fail RPCs) is
// not worth letting policy denials take healthy endpoints away.
const (
	// OutlierInterval is how often each client evaluates its endpoints;
	// a failing endpoint is ejected within one interval (Envoy's default).
	OutlierInterval = 10 * time.Second
	// OutlierBaseEjection is how long a first ejection lasts; the n-th
	// consecutive ejection lasts n times as long, up to OutlierMaxEjection.
	OutlierBaseEjection = 15 * time.Second
	OutlierMaxEjection  = 120 * time.Second
	// OutlierFailurePercent: an endpoint failing more than this share of
	// its requests in an interval is ejected…
	OutlierFailurePercent = 50
	// …if it had at least OutlierRequestVolume requests in the interval
	// (at least 10 failures: not noise) …
	OutlierRequestVolume = 20
	// …and the cluster has at least OutlierMinimumHosts endpoints (the
	// default, 5, would leave small services unprotected).
	OutlierMinimumHosts = 2
	// OutlierMaxEjectionPercent is the most of a cluster's endpoints ejected
	// at once.
	OutlierMaxEjectionPercent = 50
)

// outlierDetection is the failure-percentage ejection every generated
// upstream cluster carries. All clusters share this one message (20,000
// copies at 10,000 services cost ~10 MiB); it is read-only: nothing may
// modify it or a cluster's OutlierDetection field in place.
func outlierDetection() *clusterv3.OutlierDetection { return sharedOutlierDetection }

var sharedOutlierDetection = newOutlierDetection()

func newOutlierDetection() *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		Interval:                       durationpb.New(OutlierInterval),
		BaseEjectionTime:               durationpb.New(OutlierBaseEjection),
		MaxEjectionTime:                durationpb.New(OutlierMaxEjection),
		MaxEjectionPercent:             wrapperspb.UInt32(OutlierMaxEjectionPercent),
		EnforcingSuccessRate:           wrapperspb.UInt32(0),
		EnforcingConsecutive_5Xx:       wrapperspb.UInt32(0),
		EnforcingFailurePercentage:     wrapperspb.UInt32(100),
		FailurePercentageThreshold:     wrapperspb.UInt32(OutlierFailurePercent),
		FailurePercentageRequestVolume: wrapperspb.UInt32(OutlierRequestVolume),
		FailurePercentageMinimumHosts:  wrapperspb.UInt32(OutlierMinimumHosts),
	}
}
