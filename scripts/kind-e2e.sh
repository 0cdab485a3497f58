#!/usr/bin/env bash
# meshfed end to end on real clusters: two kind clusters (east, west) on one
# flat pod network, meshfed installed in each from images built from this
# checkout, sharing one root and federated; the bookstore demo applied with
# its clients' Pods annotated meshfed.io/proxy=envoy, so that the injector
# gives them the Envoy data plane (meshfed-capture, meshfed-agent, Envoy)
# and their calls go through Envoy sidecars; then it checks that the Pods
# came out injected and that bookbuyer's calls succeed, answered by both
# clusters. The clusters are deleted on exit (KEEP_CLUSTERS=1 keeps them).
#
# Needs docker (with a daemon), kind, kubectl and go. Where one is missing
# it says which and exits 0 with "skipped". The kind nodes pull Envoy's
# image themselves; meshfed's images are loaded into them.
#
#   ./scripts/kind-e2e.sh
#   KIND_E2E_PREFIX=mine KEEP_CLUSTERS=1 ./scripts/kind-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in docker kind kubectl go; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
	echo "kind-e2e: skipped: needs ${missing[*]} on PATH (docker with a running daemon, kind, kubectl, go)"
	exit 0
fi
if ! docker info >/dev/null 2>&1; then
	echo "kind-e2e: skipped: docker is installed but cannot reach a daemon (docker info failed)"
	exit 0
fi

prefix=${KIND_E2E_PREFIX:-meshfed-e2e}
east=$prefix-east
west=$prefix-west
ctx_east=kind-$east
ctx_west=kind-$west
timeout=${KIND_E2E_TIMEOUT:-300s}
work=$(mktemp -d)
# kind writes the clusters' contexts here, not into the user's kubeconfig.
export KUBECONFIG=$work/kubeconfig
meshfed=$work/meshfed
created=()

log() { echo "== kind-e2e: $*"; }

diagnose() {
	local ctx
	for ctx in "$ctx_east" "$ctx_west"; do
		echo "---- $ctx: pods"
		kubectl --context "$ctx" get pods -A -o wide || true
		echo "---- $ctx: meshfed-controller logs"
		kubectl --context "$ctx" -n meshfed-system logs deployment/meshfed-controller --tail=100 || true
	done
}

cleanup() {
	local rc=$?
	if ((rc != 0)) && ((${#created[@]} > 0)); then
		diagnose
	fi
	if [[ ${KEEP_CLUSTERS:-} == 1 ]]; then
		log "keeping clusters ${created[*]:-none} (KUBECONFIG=$KUBECONFIG)"
		return
	fi
	local c
	for c in ${created[@]+"${created[@]}"}; do
		kind delete cluster --name "$c" || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

for c in "$east" "$west"; do
	if kind get clusters 2>/dev/null | grep -qx "$c"; then
		echo "kind-e2e: a kind cluster named $c exists already; delete it or set KIND_E2E_PREFIX" >&2
		exit 1
	fi
done

go build -o "$meshfed" ./cmd/meshfed
version=$("$meshfed" version)
log "building meshfed $version's images"
# The installed control plane names meshfed/meshfed-controller:<version> and
# injects meshfed/meshfed:<version>; the demo's manifests name
# meshfed/bookapp:<version> (docs/injection.md, "Images and real clusters").
images=(meshfed/meshfed:"$version" meshfed/meshfed-controller:"$version" meshfed/bookapp:"$version")
docker build -f deploy/image/Dockerfile --build-arg VERSION="$version" -t "${images[0]}" .
docker build -f deploy/image/Dockerfile --build-arg VERSION="$version" --target controller -t "${images[1]}" .
docker build -f docs/example/app/Dockerfile --build-arg VERSION="$version" -t "${images[2]}" .

# Pod and Service ranges may not overlap: the clusters' pod addresses must
# reach each other directly (one flat network), which the routes below give.
create_cluster() {
	local name=$1 pods=$2 services=$3
	log "creating kind cluster $name (pods $pods)"
	created+=("$name")
	kind create cluster --name "$name" --wait 120s --config /dev/stdin <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: $pods
  serviceSubnet: $services
EOF
	kind load docker-image --name "$name" "${images[@]}"
}
create_cluster "$east" 10.244.0.0/16 10.96.0.0/16
create_cluster "$west" 10.245.0.0/16 10.97.0.0/16

node_ip() {
	docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1-control-plane"
}
east_ip=$(node_ip "$east")
west_ip=$(node_ip "$west")
docker exec "$east-control-plane" ip route add 10.245.0.0/16 via "$west_ip"
docker exec "$west-control-plane" ip route add 10.244.0.0/16 via "$east_ip"

log "installing meshfed (west shares east's root) and federating west with east"
"$meshfed" install --context "$ctx_east" --cluster-name east
"$meshfed" install --context "$ctx_west" --cluster-name west --root-from-context "$ctx_east"
for ctx in "$ctx_east" "$ctx_west"; do
	kubectl --context "$ctx" -n meshfed-system rollout status deployment/meshfed-controller --timeout="$timeout"
done
"$meshfed" cluster join west --context "$ctx_west" --peer-context "$ctx_east"

namespaces=(bookstore bookbuyer bookthief bookwarehouse)
for ctx in "$ctx_east" "$ctx_west"; do
	kubectl --context "$ctx" apply -f docs/example/manifests/apps/namespaces.yaml
	"$meshfed" namespace add --context "$ctx" "${namespaces[@]}" --enable-sidecar-injection
done

# The clients (bookbuyer, bookthief) get Envoy sidecars and dial the
# bookstore by plain DNS: bookapp is a gRPC app (it has no HTTP mode), so
# what goes through Envoy is gRPC, in plaintext from the app to its sidecar
# and mTLS from there on. The bookstore servers stay proxyless (the
# default): bookapp's server is grpc-go's xDS server, which cannot start
# without the gRPC xDS bootstrap that only the proxyless agent writes.
# Go's flags keep the last value, so an appended --target wins.
# kustomization DIR FILE...: a kustomization in DIR of the demo's FILEs
# (copied as <directory>-<file>: apps/ and export/ share names), with those
# patches on the clients it holds.
kustomization() {
	local dir=$1
	shift
	mkdir -p "$dir"
	local f name client
	local names=()
	for f in "$@"; do
		name=$(basename "$(dirname "$f")")-$(basename "$f")
		cp "$f" "$dir/$name"
		names+=("$name")
	done
	{
		echo "resources:"
		for name in "${names[@]}"; do echo "  - $name"; done
		echo "patches:"
		for client in bookbuyer bookthief; do
			if [[ -e $dir/apps-$client.yaml ]]; then
				cat <<EOF
  - target: {kind: Deployment, name: $client}
    patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: $client}
      spec:
        template:
          metadata:
            annotations: {meshfed.io/proxy: envoy}
  - target: {kind: Deployment, name: $client}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --target=dns:///bookstore.bookstore.svc.cluster.local:14001
EOF
			fi
		done
	} >"$dir/kustomization.yaml"
}
m=docs/example/manifests
kustomization "$work/east" "$m/apps/bookstore.yaml" "$m/apps/bookstore-v1.yaml" \
	"$m/apps/bookbuyer.yaml" "$m/apps/bookthief.yaml" "$m/access/traffic-access.yaml"
kustomization "$work/west" "$m/apps/bookstore.yaml" "$m/apps/bookstore-v2.yaml" \
	"$m/access/traffic-access.yaml" "$m/export/bookstore-v2.yaml"

log "applying the bookstore demo"
kubectl --context "$ctx_east" apply -k "$work/east"
kubectl --context "$ctx_west" apply -k "$work/west"
kubectl --context "$ctx_east" apply -f "$m/split/bookstore-50-50.yaml"
for d in "$ctx_east bookstore/bookstore-v1" "$ctx_east bookbuyer/bookbuyer" "$ctx_east bookthief/bookthief" \
	"$ctx_west bookstore/bookstore-v2"; do
	read -r ctx deployment <<<"$d"
	kubectl --context "$ctx" -n "${deployment%/*}" rollout status deployment/"${deployment#*/}" --timeout="$timeout"
done

# expect_injected CONTEXT NAMESPACE SELECTOR PROXY CONTAINER...: every Pod
# the label selector picks carries the annotation meshfed.io/injected=PROXY
# and the init containers named.
expect_injected() {
	local ctx=$1 ns=$2 selector=$3 proxy=$4
	shift 4
	local pods pod got inits want
	pods=$(kubectl --context "$ctx" -n "$ns" get pods -l "$selector" -o jsonpath='{.items[*].metadata.name}')
	if [[ -z $pods ]]; then
		echo "kind-e2e: $ctx: no Pods in $ns match $selector" >&2
		return 1
	fi
	for pod in $pods; do
		got=$(kubectl --context "$ctx" -n "$ns" get pod "$pod" -o jsonpath='{.metadata.annotations.meshfed\.io/injected}')
		inits=$(kubectl --context "$ctx" -n "$ns" get pod "$pod" -o jsonpath='{.spec.initContainers[*].name}')
		if [[ $got != "$proxy" ]]; then
			echo "kind-e2e: $ctx: Pod $ns/$pod: meshfed.io/injected is \"$got\", want \"$proxy\" (init containers: $inits)" >&2
			return 1
		fi
		for want in "$@"; do
			if [[ " $inits " != *" $want "* ]]; then
				echo "kind-e2e: $ctx: Pod $ns/$pod has no init container $want (it has: $inits)" >&2
				return 1
			fi
		done
		log "$ctx: $ns/$pod injected ($proxy): $inits"
	done
}
expect_injected "$ctx_east" bookbuyer app=bookbuyer envoy meshfed-capture meshfed-agent envoy
expect_injected "$ctx_east" bookthief app=bookthief envoy meshfed-capture meshfed-agent envoy
expect_injected "$ctx_east" bookstore app=bookstore,version=v1 proxyless meshfed-agent
expect_injected "$ctx_west" bookstore app=bookstore,version=v2 proxyless meshfed-agent

# bookapp's client prints one JSON line per call ({"code":"OK",
# "cluster":"east",...}). The 50/50 split sends half of bookbuyer's calls
# to bookstore-v2 in west.
log "waiting for bookbuyer's calls to succeed in both clusters"
deadline=$((SECONDS + 180))
while :; do
	calls=$(kubectl --context "$ctx_east" -n bookbuyer logs deployment/bookbuyer -c app --tail=200 2>/dev/null || true)
	ok_east=$(grep -c '"code":"OK".*"cluster":"east"' <<<"$calls" || true)
	ok_west=$(grep -c '"code":"OK".*"cluster":"west"' <<<"$calls" || true)
	if ((ok_east > 0 && ok_west > 0)); then
		break
	fi
	if ((SECONDS > deadline)); then
		echo "kind-e2e: bookbuyer's calls through Envoy: $ok_east answered by east, $ok_west by west; want both. Its last calls:" >&2
		tail -n 10 <<<"$calls" >&2
		exit 1
	fi
	sleep 5
done
log "bookbuyer's calls through Envoy succeed: $ok_east answered by east, $ok_west by west (of its last 200 lines)"
log "passed"
