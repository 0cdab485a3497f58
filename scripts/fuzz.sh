#!/usr/bin/env bash
# Runs every fuzz target of the module (every decoder of untrusted input:
# catalogs, gossip messages, CSRs, SMI objects, xDS requests) for a fixed
# number of executions each. The seeds themselves already run as plain
# tests in `go test`.
#
# The budget is a count (-fuzztime Nx), not a duration: Go 1.26's fuzzing
# coordinator can fail a duration-bounded run at its deadline with a bare
# "context deadline exceeded" and no failing input (golang/go#75804, fixed
# in Go 1.27); a count has no deadline to race.
#
# FUZZ_EXECS sets the executions per target (default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
execs=${FUZZ_EXECS:-20000}

mapfile -t dirs < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | xargs -r -n1 dirname | sort -u)
if [ ${#dirs[@]} -eq 0 ]; then
	echo "no fuzz targets"; exit 0
fi
failed=()
for d in "${dirs[@]}"; do
	for name in $(go test -list '^Fuzz' "./$d" | grep '^Fuzz'); do
		echo "== fuzz $d $name ($execs executions)"
		if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "${execs}x" -timeout 10m "./$d"; then
			failed+=("$d $name")
		fi
	done
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz targets that failed (the failing input is under the package's testdata/fuzz):"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
