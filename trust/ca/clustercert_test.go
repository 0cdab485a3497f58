package ca_test

import (
	"bytes"
	"crypto/x509"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/catalog"
)

func TestClusterCertificateSignsCatalogsOtherClustersVerify(t *testing.T) {
	root := newRoot(t)
	east := newIntermediate(t, root, "east")
	key, chain, err := east.IssueClusterCertificate("east", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := chain[0].URIs; len(got) != 1 || got[0].String() != catalog.ClusterID(td.Name(), "east") {
		t.Fatalf("URI SANs %v, want exactly %s", got, catalog.ClusterID(td.Name(), "east"))
	}
	if len(chain[0].DNSNames) != 0 || chain[0].IsCA {
		t.Fatalf("cluster certificate must carry only its URI SAN and not be a CA: %+v", chain[0])
	}
	c := &catalog.Catalog{Format: catalog.FormatVersion, Cluster: "east", Version: 1, Services: []catalog.ExportedService{{Namespace: "bookstore", Name: "bookstore"}}}
	signed, err := catalog.Sign(c, key, chain)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Certificate)
	got, _, err := catalog.Verify(signed.Bytes, catalog.VerifyOptions{Roots: roots, TrustDomain: td.Name()})
	if err != nil {
		t.Fatalf("a catalog signed with east's cluster certificate does not verify: %v", err)
	}
	if got.Cluster != "east" {
		t.Fatalf("verified catalog of %q", got.Cluster)
	}
}

func TestClusterCertificateCannotSpeakForAnotherCluster(t *testing.T) {
	root := newRoot(t)
	east := newIntermediate(t, root, "east")
	key, chain, err := east.IssueClusterCertificate("east", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &catalog.Catalog{Format: catalog.FormatVersion, Cluster: "west", Version: 1}
	signed, err := catalog.Sign(c, key, chain)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Certificate)
	if _, _, err := catalog.Verify(signed.Bytes, catalog.VerifyOptions{Roots: roots, TrustDomain: td.Name()}); err == nil {
		t.Fatal("a catalog for west signed with east's cluster certificate was accepted")
	}
}

func TestClusterCertificateRefusesBadInput(t *testing.T) {
	root := newRoot(t)
	east := newIntermediate(t, root, "east")
	for name, tc := range map[string]struct {
		cluster string
		ttl     time.Duration
	}{
		"name with a slash": {"east/ns/x", time.Hour},
		"upper case name":   {"East", time.Hour},
		"empty name":        {"", time.Hour},
		"zero TTL":          {"east", 0},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := east.IssueClusterCertificate(tc.cluster, tc.ttl); err == nil {
				t.Fatalf("IssueClusterCertificate(%q, %v) succeeded", tc.cluster, tc.ttl)
			}
		})
	}
}

func TestClusterCertificateNeverOutlivesTheIntermediate(t *testing.T) {
	root := newRoot(t)
	east := newIntermediate(t, root, "east")
	_, chain, err := east.IssueClusterCertificate("east", 24*time.Hour*365*5)
	if err != nil {
		t.Fatal(err)
	}
	if chain[0].NotAfter.After(east.Certificate().NotAfter) {
		t.Fatalf("cluster certificate valid until %v, intermediate only until %v", chain[0].NotAfter, east.Certificate().NotAfter)
	}
	if !bytes.Equal(chain[1].Raw, east.Certificate().Raw) {
		t.Fatal("chain[1] is not the intermediate")
	}
}
