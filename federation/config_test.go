package federation

import (
	"strings"
	"testing"
)

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ClusterName = "West_1"
	cfg.BindAddr = "not-an-ip"
	cfg.Seeds = []string{"no-port"}
	cfg.GossipKeys = [][]byte{[]byte("short")}
	cfg.WithdrawAfter = 0
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, want := range []string{"clusterName", "trustDomain", "bindAddr", "seed", "gossipKeys[0]", "signer", "bundle", "withdrawAfter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error does not mention %s:\n%v", want, err)
		}
	}
}

func TestDefaultConfigIsValidOnceRequiredFieldsAreSet(t *testing.T) {
	tf := newTestFederation(t)
	cfg := tf.config("east")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
