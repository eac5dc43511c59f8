#!/usr/bin/env bash
# Benchmark: `ferry verify` of bundles of many small manifests, each with a layer listed but not
# carried (issue 11, point 13). Time and peak RSS must grow linearly with the manifest count (the
# missing-blob bookkeeping used to be quadratic) and stay under 100 MiB at 100k manifests. `tar -tf`
# of the same file, in the same run, is the floor for reading every entry.
#
#   Benchmarks/reader.sh [SIZES...]      (default 25000 50000 100000 manifests)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(25000 50000 100000)
command -v /usr/bin/time >/dev/null || sudo_if_needed apt-get install -y -qq --no-install-recommends time >/dev/null

build_ferry . | tail -n 1 # the release build install.sh ships
ferry=.build-static/release/ferry
work=$(mktemp -d -t ferry-bench-reader-XXXXXX)
trap 'rm -rf "$work"' EXIT
printf '%-10s %-10s %-10s %-14s %-14s %-12s\n' manifests bundle_MiB problems ferry_s ferry_peak_MiB tar_tf_s
for n in "${sizes[@]}"; do
  "$PYTHON" Benchmarks/reader.py "$work/b.tar" $((n / 100)) 100
  mib=$(($(stat -c %s "$work/b.tar") / 1048576))
  /usr/bin/time -f '%e %M' -o "$work/ferry.time" "$ferry" verify --json "$work/b.tar" >"$work/report.json" || true
  problems=$("$PYTHON" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["problems"]))' "$work/report.json")
  /usr/bin/time -f '%e' -o "$work/tar.time" tar -tf "$work/b.tar" >/dev/null
  read -r seconds peak < <(tail -n 1 "$work/ferry.time")
  printf '%-10s %-10s %-10s %-14s %-14s %-12s\n' "$n" "$mib" "$problems" "$seconds" "$((peak / 1024))" "$(cat "$work/tar.time")"
done
