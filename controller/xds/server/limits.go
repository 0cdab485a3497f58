package server

import (
	"errors"
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// RequestLimits bound what a proxy may put in its xDS requests. Every field
// of a request is a claim of the proxy and is treated as hostile: a request
// over any limit is refused (its stream ends with the refusal's code),
// counted in meshfed_xds_refused_requests_total{reason} and logged with the
// authenticated proxy, before go-control-plane or the snapshots see it.
// The defaults are far above what Envoy and grpc-go send for a mesh of
// 10 000 services, and keep what one identity can make the controller hold
// to a few MiB per stream and per snapshot.
type RequestLimits struct {
	// MaxMessageBytes is the largest request gRPC reads (its
	// MaxRecvMsgSize); a larger one ends the stream with
	// codes.ResourceExhausted before it is decoded. Default 4 MiB, gRPC's
	// own default.
	MaxMessageBytes int
	// MaxNodeBytes bounds the serialized node (kept while the stream
	// lives). Default 256 KiB: Envoy's node lists its extensions (tens of
	// KiB).
	MaxNodeBytes int
	// MaxNodeIDBytes bounds the node ID. The ID is ignored (the client
	// certificate names the proxy) but is still a field the proxy sends.
	// Default 1 KiB.
	MaxNodeIDBytes int
	// MaxResourceNames bounds the names one request subscribes to, and the
	// names all streams of one identity and kind subscribe to per type
	// over the snapshot's life. Default 65 536.
	MaxResourceNames int
	// MaxNameBytes bounds each resource name. Default 1 KiB (meshfed's
	// names are DNS names with a prefix: under 300 bytes).
	MaxNameBytes int
	// MaxSubscribedBytes bounds the total length of the names one identity
	// and kind subscribe to per type. Default 4 MiB.
	MaxSubscribedBytes int
	// MaxVersionBytes bounds version_info and response_nonce, which
	// meshfed makes short. Default 256 bytes.
	MaxVersionBytes int
	// MaxErrorDetailBytes bounds the serialized error_detail of a NACK
	// (it is logged, truncated to 1 KiB). Default 64 KiB.
	MaxErrorDetailBytes int
}

// DefaultRequestLimits returns the limits described on RequestLimits.
func DefaultRequestLimits() RequestLimits {
	return RequestLimits{
		MaxMessageBytes:     4 << 20,
		MaxNodeBytes:        256 << 10,
		MaxNodeIDBytes:      1 << 10,
		MaxResourceNames:    1 << 16,
		MaxNameBytes:        1 << 10,
		MaxSubscribedBytes:  4 << 20,
		MaxVersionBytes:     256,
		MaxErrorDetailBytes: 64 << 10,
	}
}

// Validate reports every limit that is not positive.
func (l RequestLimits) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxMessageBytes", l.MaxMessageBytes}, {"MaxNodeBytes", l.MaxNodeBytes}, {"MaxNodeIDBytes", l.MaxNodeIDBytes},
		{"MaxResourceNames", l.MaxResourceNames}, {"MaxNameBytes", l.MaxNameBytes}, {"MaxSubscribedBytes", l.MaxSubscribedBytes},
		{"MaxVersionBytes", l.MaxVersionBytes}, {"MaxErrorDetailBytes", l.MaxErrorDetailBytes},
	} {
		if f.v <= 0 {
			errs = append(errs, fmt.Errorf("xds server: Limits.%s must be positive", f.name))
		}
	}
	return errors.Join(errs...)
}

// Refusal reasons: the reason label of meshfed_xds_refused_requests_total.
const (
	reasonMethod        = "method"         // a discovery method meshfed does not serve
	reasonMessage       = "message"        // not a DiscoveryRequest
	reasonMessageSize   = "message_size"   // over MaxMessageBytes
	reasonNode          = "node"           // node too large
	reasonNodeID        = "node_id"        // node ID too long
	reasonTypeURL       = "type_url"       // a type meshfed does not serve
	reasonNames         = "resource_names" // too many names in one request
	reasonNameLength    = "name_length"    // a name too long
	reasonLocators      = "resource_locators"
	reasonVersion       = "version"      // version_info or response_nonce too long
	reasonErrorDetail   = "error_detail" // NACK detail too large
	reasonSubscriptions = "subscriptions"
)

// refusal is why a request is refused; it ends the stream with code.
type refusal struct {
	reason string
	code   codes.Code
	msg    string
}

func (r *refusal) Error() string { return r.msg }

func refuse(reason string, code codes.Code, format string, args ...any) *refusal {
	return &refusal{reason: reason, code: code, msg: fmt.Sprintf(format, args...)}
}

// checkRequest checks one state-of-the-world request against l before
// anything else reads it. It returns nil or a *refusal. It is pure: it
// reads req and l only.
func checkRequest(req *discoveryv3.DiscoveryRequest, l RequestLimits) *refusal {
	if req == nil {
		return refuse(reasonMessage, codes.InvalidArgument, "empty request")
	}
	if responseType(req.GetTypeUrl()) == types.UnknownType {
		return refuse(reasonTypeURL, codes.InvalidArgument, "type URL %q is not served: meshfed serves listeners, routes, clusters, endpoints and secrets",
			truncate(req.GetTypeUrl(), 128))
	}
	if node := req.GetNode(); node != nil {
		if n := len(node.GetId()); n > l.MaxNodeIDBytes {
			return refuse(reasonNodeID, codes.InvalidArgument, "node ID of %d bytes (limit %d)", n, l.MaxNodeIDBytes)
		}
		if n := proto.Size(node); n > l.MaxNodeBytes {
			return refuse(reasonNode, codes.InvalidArgument, "node of %d bytes (limit %d)", n, l.MaxNodeBytes)
		}
	}
	if n := len(req.GetResourceNames()); n > l.MaxResourceNames {
		return refuse(reasonNames, codes.ResourceExhausted, "%d resource names in one request (limit %d)", n, l.MaxResourceNames)
	}
	for _, name := range req.GetResourceNames() {
		if len(name) > l.MaxNameBytes {
			return refuse(reasonNameLength, codes.InvalidArgument, "resource name of %d bytes (limit %d)", len(name), l.MaxNameBytes)
		}
	}
	if n := len(req.GetResourceLocators()); n > 0 {
		return refuse(reasonLocators, codes.InvalidArgument, "%d resource locators: meshfed takes resource names only (no dynamic parameters)", n)
	}
	if n := max(len(req.GetVersionInfo()), len(req.GetResponseNonce())); n > l.MaxVersionBytes {
		return refuse(reasonVersion, codes.InvalidArgument, "version or nonce of %d bytes (limit %d)", n, l.MaxVersionBytes)
	}
	if d := req.GetErrorDetail(); d != nil {
		if n := proto.Size(d); n > l.MaxErrorDetailBytes {
			return refuse(reasonErrorDetail, codes.InvalidArgument, "error detail of %d bytes (limit %d)", n, l.MaxErrorDetailBytes)
		}
	}
	return nil
}

// truncate returns s cut to at most n bytes, marked if cut, for logs and
// messages that repeat what a proxy sent.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(truncated)"
}
