package federation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshfed/meshfed/federation/catalog"
)

// A restart note tells the other members that this cluster's member is
// leaving only to start again (its settings changed), so they keep the
// catalog they hold of it for up to Config.RestartGrace instead of
// withdrawing it after WithdrawAfter. It is signed with the cluster's
// catalog-signing key, so no other member can forge one, and it names the
// catalog version it covers, so an old note replayed later is refused.
type restartNote struct {
	Cluster string `json:"c"`
	// Version and Digest are the catalog the owner asks its peers to keep.
	Version uint64 `json:"v"`
	Digest  string `json:"d"`
}

// signedNote is a restart note as it travels (kindRestart, by stream).
type signedNote struct {
	Note  []byte   `json:"note"`  // JSON of restartNote
	Chain [][]byte `json:"chain"` // DER, leaf first
	Sig   []byte   `json:"sig"`   // over SHA-256 of Note
}

// Limits on a signed note, far above what meshfed sends (~2 KB).
const (
	maxNoteBytes  = 16 << 10
	maxNoteChain  = 4
	maxNoteInside = 512
)

// Errors of verifyRestartNote; each refusal wraps one.
var (
	errNoteDecode   = errors.New("restart note does not decode")
	errNoteSig      = errors.New("restart note signature invalid")
	errNoteChain    = errors.New("restart note signer does not chain to the trust roots")
	errNoteIdentity = errors.New("restart note signer does not name the note's cluster")
)

func signRestartNote(n restartNote, key crypto.Signer, chain []*x509.Certificate) ([]byte, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("restart note of %s: empty certificate chain", n.Cluster)
	}
	body, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("restart note of %s: %w", n.Cluster, err)
	}
	digest := sha256.Sum256(body)
	var sig []byte
	switch key.Public().(type) {
	case ed25519.PublicKey:
		sig, err = key.Sign(rand.Reader, digest[:], crypto.Hash(0))
	case *rsa.PublicKey:
		sig, err = key.Sign(rand.Reader, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	default:
		sig, err = key.Sign(rand.Reader, digest[:], crypto.SHA256)
	}
	if err != nil {
		return nil, fmt.Errorf("restart note of %s: sign: %w", n.Cluster, err)
	}
	sn := signedNote{Note: body, Sig: sig}
	for _, c := range chain {
		sn.Chain = append(sn.Chain, c.Raw)
	}
	return json.Marshal(sn)
}

// decodeRestartNote parses a signed note without verifying it.
func decodeRestartNote(b []byte) (signedNote, restartNote, error) {
	var sn signedNote
	var n restartNote
	if len(b) > maxNoteBytes {
		return sn, n, fmt.Errorf("%w: %d bytes, limit %d", errNoteDecode, len(b), maxNoteBytes)
	}
	if err := json.Unmarshal(b, &sn); err != nil {
		return sn, n, fmt.Errorf("%w: %v", errNoteDecode, err)
	}
	if len(sn.Chain) == 0 || len(sn.Chain) > maxNoteChain || len(sn.Note) > maxNoteInside {
		return sn, n, fmt.Errorf("%w: %d certificates, note of %d bytes", errNoteDecode, len(sn.Chain), len(sn.Note))
	}
	if err := json.Unmarshal(sn.Note, &n); err != nil {
		return sn, n, fmt.Errorf("%w: %v", errNoteDecode, err)
	}
	if !catalog.ValidClusterName(n.Cluster) || n.Version == 0 {
		return sn, n, fmt.Errorf("%w: cluster %q version %d", errNoteDecode, n.Cluster, n.Version)
	}
	return sn, n, nil
}

// verifyRestartNote checks a note the way catalog.Verify checks a catalog:
// signature by the leaf, leaf chained to roots, issued by the named
// cluster's intermediate (or a root), and naming exactly that cluster.
func verifyRestartNote(b []byte, roots *x509.CertPool, trustDomain string, now time.Time) (restartNote, error) {
	sn, n, err := decodeRestartNote(b)
	if err != nil {
		return n, err
	}
	certs := make([]*x509.Certificate, 0, len(sn.Chain))
	for _, der := range sn.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return n, fmt.Errorf("restart note of %s: %w: certificate: %v", n.Cluster, errNoteDecode, err)
		}
		certs = append(certs, c)
	}
	leaf := certs[0]
	digest := sha256.Sum256(sn.Note)
	if !verifyDigest(leaf.PublicKey, digest[:], sn.Sig) {
		return n, fmt.Errorf("restart note of %s: %w", n.Cluster, errNoteSig)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return n, fmt.Errorf("restart note of %s: %w: %v", n.Cluster, errNoteChain, err)
	}
	issued := false
	for _, ch := range chains {
		if len(ch) == 2 || (len(ch) > 2 && ch[1].Subject.CommonName == catalog.ClusterCACommonName(n.Cluster)) {
			issued = true
		}
	}
	want := catalog.ClusterID(trustDomain, n.Cluster)
	if !issued || len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		return n, fmt.Errorf("restart note of %s: %w: want a certificate for %s issued by %q", n.Cluster, errNoteIdentity, want, catalog.ClusterCACommonName(n.Cluster))
	}
	return n, nil
}

func verifyDigest(pub crypto.PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(k, digest, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPSS(k, crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	}
	return false
}
