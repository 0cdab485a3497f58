#!/usr/bin/env bash
# The test suite as CI runs it: formatting, vet, the sandbox binaries (built
# once from their pinned Go modules, ~10 minutes on 2 cores the first time),
# then every test with the race detector, then a short run of every fuzz
# target (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== sandbox binaries (kube-apiserver, kube-controller-manager, kubectl, etcd)"
go run ./cmd/meshfed sandbox build

echo "== go test"
go test -race -timeout 45m "$@" ./...

echo "== fuzz"
./scripts/fuzz.sh
