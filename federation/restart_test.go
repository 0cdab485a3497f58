package federation

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// west's federation settings change: its member leaves with a signed
// restart note and comes back. east keeps west's services past its
// WithdrawAfter until the new member publishes. A restart note signed by
// another member, or a real one replayed, is refused, and a real stop
// (no note) still withdraws.
func TestSettingsChangeDoesNotWithdrawExports(t *testing.T) {
	tf := newTestFederation(t)
	eastCfg := tf.config("east")
	eastCfg.WithdrawAfter = time.Second
	east := start(t, eastCfg)
	mallory := start(t, tf.config("mallory", east))
	westCfg := tf.config("west", east)
	west := start(t, westCfg)
	v1 := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.5"))
	eventually(t, 20*time.Second, func() (bool, string) { return sees(east, "west", v1) })
	eventually(t, 20*time.Second, func() (bool, string) { return memberState(mallory, "east") == StateAlive, "mallory sees east" })

	// A note for west's catalog signed by mallory is refused.
	mKey, mChain, _ := mallory.f.cfg.Signer.CatalogSigner()
	forgedNote, err := signRestartNote(restartNote{Cluster: "west", Version: v1, Digest: westDigest(t, west)}, mKey, mChain)
	if err != nil {
		t.Fatal(err)
	}
	before := rejected(east, "restart-note")
	sendRaw(t, mallory, east, append([]byte{kindRestart}, forgedNote...))
	eventually(t, 10*time.Second, func() (bool, string) {
		return rejected(east, "restart-note") == before+1, "east has not refused mallory's restart note for west"
	})

	// The settings change: west restarts with a note.
	d1 := westDigest(t, west)
	west.f.MarkRestart()
	if err := west.stop(t); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() (bool, string) { return memberState(east, "west") == StateLeft, "west not left yet" })
	// Past east's WithdrawAfter, west's services are still served.
	stays(t, 3*eastCfg.WithdrawAfter, func() (bool, string) {
		cv := east.f.Snapshot().Clusters["west"]
		return hasService(east, "west", "bookstore/bookstore-v2"), fmt.Sprintf("east withdrew west during its restart: %q", cv.Reason)
	})
	if r := east.f.Snapshot().Clusters["west"].Reason; !strings.Contains(r, "restarting") {
		t.Errorf("east's reason for west = %q, want it to say west is restarting", r)
	}
	// The same note again (mallory received it too) is refused: a note
	// is honoured once per catalog version.
	westKey, westChain, _ := westCfg.Signer.CatalogSigner()
	note1, err := signRestartNote(restartNote{Cluster: "west", Version: v1, Digest: d1}, westKey, westChain)
	if err != nil {
		t.Fatal(err)
	}
	before = rejected(east, "restart-note")
	sendRaw(t, mallory, east, append([]byte{kindRestart}, note1...))
	eventually(t, 10*time.Second, func() (bool, string) {
		return rejected(east, "restart-note") == before+1, "east has not refused the replayed restart note"
	})

	west = start(t, tf.config("west", east))
	v2 := publish(t, west, svc("bookstore", "bookstore-v2", "10.244.2.6"))
	eventually(t, 20*time.Second, func() (bool, string) { return sees(east, "west", v2) })
	// Replayed after the new member published, it names a catalog east
	// no longer holds: refused.
	sendRaw(t, mallory, east, append([]byte{kindRestart}, note1...))
	eventually(t, 10*time.Second, func() (bool, string) {
		return rejected(east, "restart-note") == before+2, "east has not refused the out-of-date restart note"
	})

	// A real stop (no restart note) still withdraws after WithdrawAfter.
	if err := west.stop(t); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		cv := east.f.Snapshot().Clusters["west"]
		return cv.Member.State == StateLeft && !hasService(east, "west", "bookstore/bookstore-v2"),
			fmt.Sprintf("east still serves west after a real stop: %s, %q", cv.Member.State, cv.Reason)
	})
}

// westDigest is the short digest of west's current catalog.
func westDigest(t *testing.T, west *node) string {
	t.Helper()
	var d string
	eventually(t, 10*time.Second, func() (bool, string) {
		// The digest is in west's own push/pull state.
		ds, err := decodeDigest(*west.f.localState.Load())
		if err == nil {
			for _, n := range ds.Catalogs {
				if n.Cluster == "west" {
					d = n.Digest
				}
			}
		}
		return d != "", "west has no catalog in its digest"
	})
	return d
}
