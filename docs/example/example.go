// Package example holds the bookstore demo's manifests (SMI policy,
// TrafficSplits, ServiceExports and the apps), embedded so that a meshfed
// binary carries them: `meshfed demo` applies them from here, not from a
// checkout.
package example

import "embed"

// Manifests is the manifests directory: Manifests.ReadDir("manifests").
//
//go:embed manifests
var Manifests embed.FS
