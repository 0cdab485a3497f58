// Package networks holds the end-to-end suite of clusters on separate
// networks (issue 11): local clusters whose pods cannot reach one another,
// each with an east-west gateway (the stand-in for Envoy) that the other
// networks reach through a link, real meshfed-controller processes, and
// the bookstore as real grpc-go processes.
package networks
