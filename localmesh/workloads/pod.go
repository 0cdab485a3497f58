package workloads

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/localmesh/gateway"
)

// What a container runtime and the cluster's DNS give a container, played
// with plain processes: every volume of the Pod is a directory under the
// Pod's directory, and the paths and Service addresses a container's
// arguments and environment name are rewritten to where they live locally.

// volumes makes each of the Pod's volumes a directory under dir/volumes
// and fills it as the kubelet does at start: emptyDir empty, ConfigMaps
// and Secrets with their keys, projected ServiceAccount tokens from a
// TokenRequest bound to the Pod. It returns volume name → directory. A
// missing ConfigMap or Secret that is not optional is an error (the start
// is retried, as the kubelet retries).
func volumes(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		vdir := filepath.Join(dir, "volumes", v.Name)
		if err := os.MkdirAll(vdir, 0o700); err != nil {
			return nil, err
		}
		out[v.Name] = vdir
		var files map[string][]byte
		var err error
		switch {
		case v.EmptyDir != nil:
		case v.ConfigMap != nil:
			files, err = configMapFiles(ctx, client, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional)
		case v.Secret != nil:
			files, err = secretFiles(ctx, client, pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional)
		case v.Projected != nil:
			files = map[string][]byte{}
			for _, src := range v.Projected.Sources {
				var more map[string][]byte
				switch {
				case src.ServiceAccountToken != nil:
					more, err = tokenFile(ctx, client, pod, src.ServiceAccountToken)
				case src.ConfigMap != nil:
					more, err = configMapFiles(ctx, client, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional)
				case src.Secret != nil:
					more, err = secretFiles(ctx, client, pod.Namespace, src.Secret.Name, src.Secret.Items, src.Secret.Optional)
				default:
					err = fmt.Errorf("a projected source of volume %s is not one the local clusters provide", v.Name)
				}
				if err != nil {
					break
				}
				for k, b := range more {
					files[k] = b
				}
			}
		default:
			err = fmt.Errorf("volume %s: its kind is not one the local clusters provide (emptyDir, configMap, secret, projected)", v.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("Pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		for name, b := range files {
			path := filepath.Join(vdir, filepath.Clean("/"+name))
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return nil, err
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func configMapFiles(ctx context.Context, client kubernetes.Interface, ns, name string, items []corev1.KeyToPath, optional *bool) (map[string][]byte, error) {
	cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: %w", ns, name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyFiles(data, items, "ConfigMap "+ns+"/"+name)
}

func secretFiles(ctx context.Context, client kubernetes.Interface, ns, name string, items []corev1.KeyToPath, optional *bool) (map[string][]byte, error) {
	s, err := client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w", ns, name, err)
	}
	return keyFiles(s.Data, items, "Secret "+ns+"/"+name)
}

// keyFiles is every key as a file, or only items, at their paths.
func keyFiles(data map[string][]byte, items []corev1.KeyToPath, what string) (map[string][]byte, error) {
	if len(items) == 0 {
		return data, nil
	}
	out := map[string][]byte{}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("%s has no key %s", what, it.Key)
		}
		out[it.Path] = b
	}
	return out, nil
}

// tokenFile asks the API server for the projected token: the Pod's
// ServiceAccount, the projection's audience and lifetime, bound to the
// Pod. It is written once; the local clusters' tests are shorter than a
// token's life.
func tokenFile(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) (map[string][]byte, error) {
	sa := serviceAccount(pod)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: p.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if p.Audience != "" {
		req.Spec.Audiences = []string{p.Audience}
	}
	tr, err := client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for ServiceAccount %s/%s: %w", pod.Namespace, sa, err)
	}
	return map[string][]byte{p.Path: []byte(tr.Status.Token)}, nil
}

func serviceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName == "" {
		return "default"
	}
	return pod.Spec.ServiceAccountName
}

// container is one container of a Pod as the runner runs it: where its
// mounts and Services are here, and its evaluated environment.
type container struct {
	spec *corev1.Container
	rt   gateway.Runtime
	env  []string // name=value, paths and addresses rewritten; then rt's
	vars map[string]string
}

func newContainer(pod *corev1.Pod, c *corev1.Container, vols, services map[string]string) (*container, error) {
	ct := &container{spec: c, rt: gateway.Runtime{Mounts: map[string]string{}, Services: services}, vars: map[string]string{}}
	for _, m := range c.VolumeMounts {
		dir, ok := vols[m.Name]
		if !ok {
			return nil, fmt.Errorf("container %s mounts volume %s, which the Pod does not have", c.Name, m.Name)
		}
		if m.SubPath != "" {
			dir = filepath.Join(dir, filepath.Clean("/"+m.SubPath))
		}
		ct.rt.Mounts[filepath.Clean(m.MountPath)] = dir
	}
	for _, kv := range podEnv(pod, c) {
		name, value, _ := strings.Cut(kv, "=")
		ct.vars[name] = value
		ct.env = append(ct.env, name+"="+ct.rewrite(value))
	}
	ct.env = append(ct.env, ct.rt.Environ()...)
	return ct, nil
}

// varRef is a $(NAME) reference in a container's arguments.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// args are the container's arguments as the kubelet passes them — each
// $(NAME) of its environment expanded — with paths and addresses
// rewritten.
func (ct *container) args(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		a = varRef.ReplaceAllStringFunc(a, func(ref string) string {
			if v, ok := ct.vars[ref[2:len(ref)-1]]; ok {
				return v
			}
			return ref
		})
		if flag, value, ok := strings.Cut(a, "="); ok && strings.HasPrefix(flag, "-") {
			out[i] = flag + "=" + ct.rewrite(value)
		} else {
			out[i] = ct.rewrite(a)
		}
	}
	return out
}

// rewrite maps a Service address to where the local cluster serves it and
// a path under one of the container's mounts to its local file; anything
// else stays as it is.
func (ct *container) rewrite(v string) string {
	if local := ct.rt.Address(v); local != v {
		return local
	}
	if strings.HasPrefix(v, "/") {
		if local, err := ct.rt.Path(v); err == nil {
			return local
		}
	}
	return v
}

// probe runs a startup probe's command (exec probes only) as the
// container would, with program standing for the command's first word
// when it names the container's own program.
func (ct *container) probe(ctx context.Context, network PodNetwork, programs map[string]string) error {
	p := ct.spec.StartupProbe
	if p == nil || p.Exec == nil || len(p.Exec.Command) == 0 {
		return nil
	}
	argv := ct.args(p.Exec.Command)
	if local, ok := programs[argv[0]]; ok {
		argv[0] = local
	}
	var cmd *exec.Cmd
	if network == nil {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	} else {
		cmd = network.Command(argv[0], argv[1:]...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
