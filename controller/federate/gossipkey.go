package federate

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/controller/meshconfig"
)

// GossipKeyringKey is the data key of the gossip keyring Secret (named by
// MeshConfig spec.federation.gossipKeySecretName, default
// "meshfed-gossip-key"): base64-encoded AES keys (16, 24 or 32 bytes), one
// per line, the primary (used to encrypt) first. To rotate without a
// restart, edit the Secret in every cluster: add the new key as the second
// line, then move it first, then drop the old one (see
// federation.Federation.SetGossipKeys).
const GossipKeyringKey = "keyring"

// DefaultGossipKeySecret is the default name of the gossip keyring Secret.
const DefaultGossipKeySecret = meshconfig.DefaultGossipKeySecret

// ParseGossipKeyring reads a keyring Secret's data.
func ParseGossipKeyring(data []byte) ([][]byte, error) {
	var keys [][]byte
	var errs []error
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("gossip keyring line %d: not base64: %w", i+1, err))
			continue
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			errs = append(errs, fmt.Errorf("gossip keyring line %d: %d-byte key, want 16, 24 or 32", i+1, n))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("gossip keyring holds no key"))
	}
	return keys, errors.Join(errs...)
}

// FormatGossipKeyring is the inverse of ParseGossipKeyring.
func FormatGossipKeyring(keys [][]byte) []byte {
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// LoadGossipKeys reads the keyring Secret namespace/name. A missing Secret
// is reported with an error satisfying apierrors.IsNotFound.
func LoadGossipKeys(ctx context.Context, client kubernetes.Interface, namespace, name string) ([][]byte, error) {
	s, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("gossip key Secret %s/%s: %w", namespace, name, err)
	}
	keys, err := ParseGossipKeyring(s.Data[GossipKeyringKey])
	if err != nil {
		return nil, fmt.Errorf("gossip key Secret %s/%s: %w", namespace, name, err)
	}
	return keys, nil
}

// EnsureGossipKeys returns the keyring in Secret namespace/name, creating
// the Secret with one new random 32-byte key when it does not exist.
func EnsureGossipKeys(ctx context.Context, client kubernetes.Interface, namespace, name string) (keys [][]byte, created bool, err error) {
	keys, err = LoadGossipKeys(ctx, client, namespace, name)
	if err == nil || !apierrors.IsNotFound(err) {
		return keys, false, err
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, false, err
	}
	if err := SaveGossipKeys(ctx, client, namespace, name, [][]byte{k}, false); err != nil {
		if apierrors.IsAlreadyExists(err) { // raced with another writer: take theirs
			keys, err = LoadGossipKeys(ctx, client, namespace, name)
			return keys, false, err
		}
		return nil, false, err
	}
	return [][]byte{k}, true, nil
}

// SaveGossipKeys writes keys into Secret namespace/name, creating it; with
// replace, an existing Secret's keyring is replaced.
func SaveGossipKeys(ctx context.Context, client kubernetes.Interface, namespace, name string, keys [][]byte, replace bool) error {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{LabelManagedBy: ManagedBy}},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{GossipKeyringKey: FormatGossipKeyring(keys)},
	}
	_, err := client.CoreV1().Secrets(namespace).Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) && replace {
		cur, gerr := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		if cur.Data == nil {
			cur.Data = map[string][]byte{}
		}
		cur.Data[GossipKeyringKey] = s.Data[GossipKeyringKey]
		_, err = client.CoreV1().Secrets(namespace).Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("gossip key Secret %s/%s: %w", namespace, name, err)
	}
	return nil
}
