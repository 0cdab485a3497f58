package demo_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/meshfed/meshfed/demo"
	"github.com/meshfed/meshfed/localmesh/workloads"
)

// `meshfed demo --check`: the whole demo, unattended — two federated
// clusters of real parts, real controller processes, the bookstore as real
// mTLS gRPC processes — and every expectation of the scenario.
func TestDemoCheck(t *testing.T) {
	if err := workloads.CanCreateUserNetworks(); err != nil {
		t.Skipf("the demo needs unprivileged user and network namespaces: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := demo.Run(ctx, demo.Config{Check: true, Dir: t.TempDir(), Out: &out})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
}
