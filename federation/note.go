package federation

import (
	"crypto"
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

// errNoteDecode is wrapped by a note that does not decode; a note whose
// signer may not speak for its cluster gets catalog.VerifySigner's errors.
var errNoteDecode = errors.New("restart note does not decode")

func signRestartNote(n restartNote, key crypto.Signer, chain []*x509.Certificate) ([]byte, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("restart note of %s: empty certificate chain", n.Cluster)
	}
	body, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("restart note of %s: %w", n.Cluster, err)
	}
	digest := sha256.Sum256(body)
	sig, err := catalog.SignDigest(key, digest[:])
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

// verifyRestartNote checks a note with the check catalog.Verify makes of a
// catalog (catalog.VerifySigner): signature by the leaf, leaf chained to
// roots, issued by the named cluster's intermediate (or a root), and
// naming exactly that cluster.
func verifyRestartNote(b []byte, roots *x509.CertPool, trustDomain string, now time.Time) (restartNote, error) {
	sn, n, err := decodeRestartNote(b)
	if err != nil {
		return n, err
	}
	digest := sha256.Sum256(sn.Note)
	if err := catalog.VerifySigner(digest[:], sn.Sig, sn.Chain, n.Cluster, roots, trustDomain, now); err != nil {
		return n, fmt.Errorf("restart note of %s: %w", n.Cluster, err)
	}
	return n, nil
}
