#!/usr/bin/env bash
# Benchmark: `ferry export` against skopeo (`skopeo copy` of each image into one oci: directory,
# then `tar`), same images from the same local distribution registry over TLS, in one run.
#
#   Benchmarks/export.sh [LARGE_LAYER_SIZE]      (default 1G)
#
# Image set: one image with a LARGE_LAYER_SIZE layer, a two-platform image, and three images that
# share a 64 MiB base layer. Each tool runs RUNS times (default 2), alternating, each with an empty
# cache/destination; the table reports every run, the best time of each, the ratio and ferry's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
large=${1:-1G}
runs=${RUNS:-2}

swift build -c release --product ferry 2>&1 | tail -1
ferry=$(swift build -c release --show-bin-path)/ferry
work=$(mktemp -d -t ferry-bench-XXXXXX)
trap 'stop_registry; rm -rf "$work"' EXIT
start_registry "$work/registry"
python3 scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" \
  "bench/large:1=$large" "bench/multi:1=base:32M,16M@linux/amd64+linux/arm64/v8" \
  bench/app-a:1=base:64M,8M bench/app-b:1=base:64M,8M bench/app-c:1=base:64M,8M >"$work/images.txt"
total=$(du -sb "$work/registry/data" | cut -f1)
echo "images: $(wc -l <"$work/images.txt"), registry holds $((total / 1048576)) MiB"

run_ferry() {
  rm -rf "$work/ferry-cache" "$work/ferry.tar"
  /usr/bin/time -f "%e %M" -o "$work/ferry.time" "$ferry" export -f "$work/images.txt" -o "$work/ferry.tar" \
    --ca-file "$REGISTRY_CA" --cache "$work/ferry-cache" --progress none >/dev/null
  read -r seconds rss <"$work/ferry.time"
  echo "$seconds $rss"
}

run_skopeo() {
  rm -rf "$work/oci" "$work/skopeo.tar"
  local start end
  start=$(date +%s.%N)
  while read -r reference; do
    skopeo copy --quiet --all --src-cert-dir "$REGISTRY_CERTS" "docker://$reference" "oci:$work/oci:$reference"
  done <"$work/images.txt"
  tar -cf "$work/skopeo.tar" -C "$work/oci" .
  sync -f "$work/skopeo.tar"
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.2f}')"
}

best_ferry=999999
best_skopeo=999999
peak=0
for i in $(seq "$runs"); do
  read -r f rss < <(run_ferry)
  s=$(run_skopeo)
  echo "run $i: ferry ${f}s (peak RSS $((rss / 1024)) MiB), skopeo+tar ${s}s"
  best_ferry=$(python3 -c "print(min($best_ferry, $f))")
  best_skopeo=$(python3 -c "print(min($best_skopeo, $s))")
  peak=$((rss > peak ? rss : peak))
done
ferry_size=$(stat -c %s "$work/ferry.tar")
skopeo_size=$(stat -c %s "$work/skopeo.tar")
echo
echo "| tool | best of $runs (s) | bundle size (MiB) |"
echo "|---|---|---|"
echo "| ferry export | $best_ferry | $((ferry_size / 1048576)) |"
echo "| skopeo copy + tar | $best_skopeo | $((skopeo_size / 1048576)) |"
python3 -c "print(f'ferry is {$best_skopeo / $best_ferry:.2f}x faster; ferry peak RSS {$peak / 1024:.0f} MiB')"
