package generate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Outlier detection: every client (Envoy or grpc-go) ejects, on its own,
// an endpoint that fails most of its requests — a pod that is up and ready
// but broken, or an endpoint of a cluster that is lost and not yet
// withdrawn by federation. grpc-go supports only success-rate and
// failure-percentage ejection (gRFC A50; DESIGN.md, Known traps); both
// data planes get the same failure-percentage rule, success-rate ejection
// off (it needs five hosts and a statistical spread, and grpc-go turns it
// on at 100 % enforcement when the field is unset), and Envoy's
// consecutive-5xx rule off too, so that both behave alike.
//
// grpc-go counts every RPC that ends with an error as a failure,
// PermissionDenied included: a client denied by policy sees every endpoint
// fail. max_ejection_percent bounds the damage of any failure that hits
// every endpoint at once (an outage, a denial): at least half the
// endpoints stay in, and an ejected one returns after base_ejection_time.
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
