package federate

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/meshfed/meshfed/federation"
)

// EpochConfigMap is the ConfigMap, in the controller's namespace, that
// keeps this cluster's catalog epoch (data key "epoch", a decimal number)
// across controller restarts. Catalog versions are epoch<<32 | sequence,
// so the federation's versions keep increasing whatever the clock does.
// Losing it is safe: the member recovers its epoch from its peers.
const EpochConfigMap = "meshfed-catalog-epoch"

// epochKey is EpochConfigMap's data key.
const epochKey = "epoch"

// EpochStore is a federation.EpochStore kept in EpochConfigMap.
type EpochStore struct {
	client    kubernetes.Interface
	namespace string
	log       *slog.Logger
}

var _ federation.EpochStore = (*EpochStore)(nil)

// NewEpochStore returns the epoch store of the controller in namespace.
func NewEpochStore(client kubernetes.Interface, namespace string, log *slog.Logger) *EpochStore {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &EpochStore{client: client, namespace: namespace, log: log}
}

// Advance implements federation.EpochStore: it reads the stored epoch,
// stores the next one (at least atLeast) and returns it, retrying on
// conflicting writes. An unreadable value is reported and treated as lost:
// the member then recovers its epoch from its peers.
func (s *EpochStore) Advance(ctx context.Context, atLeast uint32) (uint32, error) {
	cms := s.client.CoreV1().ConfigMaps(s.namespace)
	var next uint32
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, EpochConfigMap, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			next, err = federation.NextEpoch(0, atLeast)
			if err != nil {
				return err
			}
			cm = &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: EpochConfigMap, Namespace: s.namespace,
					Labels: map[string]string{"app.kubernetes.io/managed-by": "meshfed"}},
				Data: map[string]string{epochKey: strconv.FormatUint(uint64(next), 10)},
			}
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), EpochConfigMap, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		stored, perr := strconv.ParseUint(cm.Data[epochKey], 10, 32)
		if perr != nil {
			s.log.Error("catalog epoch unreadable; treating it as lost (the epoch is recovered from the peers)",
				"configmap", s.namespace+"/"+EpochConfigMap, "value", cm.Data[epochKey], "err", perr)
			stored = 0
		}
		next, err = federation.NextEpoch(uint32(stored), atLeast)
		if err != nil {
			return err
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[epochKey] = strconv.FormatUint(uint64(next), 10)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("catalog epoch in configmap %s/%s: %w", s.namespace, EpochConfigMap, err)
	}
	return next, nil
}
