#!/usr/bin/env bash
# Benchmark: `ferry verify` against `openssl dgst -sha256` of the same bundle (at least 2 GiB), in
# one run. Both read and hash every byte once; the goal is ferry >= 0.9x openssl's throughput with
# peak RSS under 64 MiB.
#
#   Benchmarks/verify.sh [LAYER_SIZE] [LAYERS]      (default 1G 2: a bundle of a little over 2 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
size=${1:-1G}
layers=${2:-2}
runs=${RUNS:-3}

swift build -c release --product ferry 2>&1 | tail -1
ferry=$(swift build -c release --show-bin-path)/ferry
work=$(mktemp -d -t ferry-bench-XXXXXX)
trap 'stop_registry; rm -rf "$work"' EXIT
start_registry "$work/registry"
specs=()
for i in $(seq "$layers"); do specs+=("bench/big$i:1=$size"); done
python3 scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" "${specs[@]}" >"$work/images.txt"
"$ferry" export -f "$work/images.txt" -o "$work/bundle.tar" --ca-file "$REGISTRY_CA" --cache "$work/cache" \
  --progress none >/dev/null
stop_registry
rm -rf "$work/cache" "$work/registry/data"
bytes=$(stat -c %s "$work/bundle.tar")
echo "bundle: $((bytes / 1048576)) MiB"

ferry_runs=()
openssl_runs=()
peak=0
for i in $(seq "$runs"); do
  cat "$work/bundle.tar" >/dev/null  # same page-cache state for both
  /usr/bin/time -f "%e %M" -o "$work/ferry.time" "$ferry" verify "$work/bundle.tar" >/dev/null
  read -r f rss <"$work/ferry.time"
  /usr/bin/time -f "%e %M" -o "$work/openssl.time" openssl dgst -sha256 "$work/bundle.tar" >/dev/null
  read -r o _ <"$work/openssl.time"
  echo "run $i: ferry verify ${f}s (peak RSS $((rss / 1024)) MiB), openssl dgst -sha256 ${o}s"
  ferry_runs+=("$f")
  openssl_runs+=("$o")
  peak=$((rss > peak ? rss : peak))
done
/usr/bin/time -f "%e %M" -o "$work/pipe.time" sh -c "cat '$work/bundle.tar' | '$ferry' verify - >/dev/null"
read -r p _ <"$work/pipe.time"
best_ferry=$(bench_min "${ferry_runs[@]}")
best_openssl=$(bench_min "${openssl_runs[@]}")
echo
echo "| tool | best of $runs (s) | throughput (MB/s) |"
echo "|---|---|---|"
python3 - <<PY
b = $bytes
for name, t in (("ferry verify", $best_ferry), ("openssl dgst -sha256", $best_openssl), ("cat | ferry verify - (one run)", $p)):
    print(f"| {name} | {t} | {b / t / 1e6:.0f} |")
print(f"ferry verify runs at {$best_openssl / $best_ferry:.2f}x openssl's speed; peak RSS {$peak / 1024:.0f} MiB")
PY
