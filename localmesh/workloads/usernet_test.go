package workloads_test

import (
	"strings"
	"testing"

	"github.com/meshfed/meshfed/localmesh/workloads"
)

// Two pod addresses of two clusters' CIDRs reach each other inside one
// user network made without root privileges, and an address outside the
// CIDRs is refused.
func TestUserNetworkCarriesPodTrafficAndNothingElse(t *testing.T) {
	if err := workloads.CanCreateUserNetworks(); err != nil {
		t.Skipf("needs unprivileged user+network namespaces: %v", err)
	}
	n, err := workloads.CreateUserNetwork("10.244.1.0/24", "10.244.2.0/24")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	for _, ip := range []string{"10.244.1.10", "10.244.2.10"} {
		if err := n.AddAddress(ip); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.AddAddress("192.0.2.1"); err == nil {
		t.Fatal("address outside the pod CIDRs accepted")
	}
	// A listener on one cluster's pod address answers a client bound to
	// the other's, inside the namespace.
	script := `import socket,threading
s=socket.socket(); s.bind(("10.244.1.10",14001)); s.listen()
def serve():
    c,_=s.accept(); c.sendall(b"bookstore"); c.close()
threading.Thread(target=serve).start()
c=socket.socket(); c.bind(("10.244.2.10",0)); c.settimeout(5); c.connect(("10.244.1.10",14001))
print(c.recv(20).decode())`
	out, err := n.Command("python3", "-c", script).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "bookstore" {
		t.Fatalf("pod-to-pod inside the user network: %v: %s", err, out)
	}
	routes, err := n.Command("ip", "-4", "route", "show").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(routes)) != "" {
		t.Errorf("the user network has routes out of it: %s", routes)
	}
	if err := n.RemoveAddress("10.244.1.10"); err != nil {
		t.Fatal(err)
	}
	out, err = n.Command("python3", "-c", `import socket
c=socket.socket(); c.settimeout(2)
try:
    c.connect(("10.244.1.10",14001)); print("connected")
except OSError as e:
    print("refused")`).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "refused" {
		t.Errorf("removed address still reachable: %v %s", err, out)
	}
}
