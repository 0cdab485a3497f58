package bootstrap_test

import (
	"encoding/json"
	"testing"

	"github.com/meshfed/meshfed/controller/bootstrap"
	"github.com/meshfed/meshfed/controller/xds/generate"
)

// SNI declares itself in the node's metadata, where the controller reads
// it; without it the node has no metadata.
func TestSNIIsDeclaredInTheNodeMetadata(t *testing.T) {
	for _, sni := range []bool{true, false} {
		b, err := bootstrap.JSON(bootstrap.Config{XDSAddress: "unix:///run/xds.sock", CertDir: "/certs", NodeID: "bookstore/bookbuyer-1", SNI: sni})
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Node struct {
				Metadata map[string]any `json:"metadata"`
			} `json:"node"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		if got := doc.Node.Metadata[generate.NodeMetadataSNI] == true; got != sni {
			t.Errorf("SNI %v: node metadata %v", sni, doc.Node.Metadata)
		}
	}
}
