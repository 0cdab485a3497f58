//go:build tools

// Package deps pins the libraries meshfed is built on (DESIGN.md, "Fixed
// decisions") so that their versions are chosen once for the whole module.
package deps

import (
	_ "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	_ "github.com/hashicorp/memberlist"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "github.com/spiffe/go-spiffe/v2/spiffeid"
	_ "google.golang.org/grpc/xds"
	_ "k8s.io/client-go/kubernetes"
	_ "sigs.k8s.io/controller-runtime/pkg/envtest"
	_ "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	_ "sigs.k8s.io/yaml"
)
