package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/controller/xds/generate"
	"github.com/meshfed/meshfed/mesh"
	"github.com/meshfed/meshfed/trust/ca"
)

func testAuthority(t *testing.T) (*ca.Root, *ca.Authority) {
	t.Helper()
	root, err := ca.GenerateRoot(spiffeid.RequireTrustDomainFromString(td), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("east", 12*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return root, ca.NewAuthority(inter)
}

func TestAuthoritySecretsAreReissuedAtHalfLifeAndWhenTheCARotates(t *testing.T) {
	root, authority := testAuthority(t)
	src := NewAuthoritySecrets(authority, time.Hour)
	now := time.Now()
	src.now = func() time.Time { return now }
	id := mesh.NewIdentity(td, "bookstore", "bookstore")
	get := func() []types.Resource {
		t.Helper()
		res, err := src.Secrets(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkSecrets(res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := get()
	if again := get(); !sameResources(first, again) {
		t.Fatal("secrets reissued while current")
	}
	now = now.Add(31 * time.Minute)
	renewed := get()
	if sameResources(first, renewed) {
		t.Fatal("secrets not reissued after half their life")
	}
	next, err := root.NewIntermediate("east", 12*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	authority.Set(next)
	if sameResources(renewed, get()) {
		t.Fatal("secrets not reissued after the CA rotated")
	}
}

func TestSidecarSnapshotIsPublishedOnlyWhenItsSecretsResolveItsSDSReferences(t *testing.T) {
	_, authority := testAuthority(t)
	id := mesh.NewIdentity(td, "ns-0", "sa-0")
	b := newBuilder(0)
	if _, err := b.update(syntheticMesh(3)); err != nil {
		t.Fatal(err)
	}
	key := proxyKey{id: id, kind: KindSidecar}
	ks := watchingAll()
	ks.subscribe(types.Secret, nil, true)
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)

	if snap, err := b.publish(key, ks); snap != nil || err != nil {
		t.Fatalf("published without secrets: snapshot %v, err %v", snap != nil, err)
	}
	all, err := NewAuthoritySecrets(authority, time.Hour).Secrets(id)
	if err != nil {
		t.Fatal(err)
	}
	var identityOnly []types.Resource
	for _, r := range all {
		if cachev3.GetResourceName(r) == generate.SDSIdentitySecret {
			identityOnly = append(identityOnly, r)
		}
	}
	b.setSecrets(ks, identityOnly)
	_, err = b.publish(key, ks)
	if !errors.Is(err, generate.ErrInconsistent) || !strings.Contains(err.Error(), "secret "+generate.SDSTrustBundleSecret+" is missing") {
		t.Fatalf("publish with the bundle missing: %v, want the missing secret named", err)
	}

	b.setSecrets(ks, all)
	snap, err := b.publish(key, ks)
	if snap == nil || err != nil {
		t.Fatalf("publish with its secrets: snapshot %v, err %v", snap != nil, err)
	}
	if err := cache.SetSnapshot(context.Background(), key.String(), snap); err != nil {
		t.Fatal(err)
	}
	stored, err := cache.GetSnapshot(key.String())
	if err != nil {
		t.Fatal(err)
	}
	got := stored.GetResources(resourcev3.SecretType)
	if len(got) != 2 || got[generate.SDSIdentitySecret] == nil || got[generate.SDSTrustBundleSecret] == nil {
		t.Fatalf("snapshot secrets %v", got)
	}
}
