#!/usr/bin/env bash
# Benchmark: `ferry sync` against `skopeo sync`, registry to registry, in one run.
#
#   Benchmarks/sync.sh [LARGE_LAYER_SIZE]      (default 1G)
#
# Source: a distribution registry over TLS on 127.0.0.1 with the export benchmark's image set (one
# image with a LARGE_LAYER_SIZE layer, a two-platform image, three images sharing a 64 MiB base).
# Each tool copies every image, all platforms, digests preserved, into an empty distribution registry
# over TLS (a fresh one per run, RUNS runs alternating, default 2), then runs again with nothing to do.
# image-syncer is not in Debian and cannot be fetched here, so it is not measured.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
large=${1:-1G}
runs=${RUNS:-2}

swift build -c release --product ferry 2>&1 | tail -1
ferry=$(swift build -c release --show-bin-path)/ferry
work=$(mktemp -d -t ferry-bench-sync-XXXXXX)
source_pid=
cleanup() {
  stop_registry
  if [ -n "$source_pid" ]; then kill "$source_pid" 2>/dev/null || true; wait "$source_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
best() { "$PYTHON" -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }

start_registry "$work/source"
source_pid=$REGISTRY_PID
REGISTRY_PID=
source=$REGISTRY
source_ca=$REGISTRY_CA
source_certs=$REGISTRY_CERTS
python3 scripts/make-images.py --registry "$source" --cert-dir "$source_certs" \
  "bench/large:1=$large" "bench/multi:1=base:32M,16M@linux/amd64+linux/arm64/v8" \
  bench/app-a:1=base:64M,8M bench/app-b:1=base:64M,8M bench/app-c:1=base:64M,8M >"$work/images.txt"
echo "images: $(wc -l <"$work/images.txt"), source holds $(($(du -sb "$work/source/data" | cut -f1) / 1048576)) MiB"
{
  echo "$source:"
  echo "  cert-dir: $source_certs"
  echo "  images:"
  while read -r reference; do
    name=${reference#*/}
    echo "    ${name%:*}: [\"${name##*:}\"]"
  done <"$work/images.txt"
} >"$work/skopeo-sync.yaml"

# timed NAME COMMAND...: runs it, appends "seconds peak-KiB" to $work/NAME.times
timed() {
  local name=$1
  shift
  /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" >/dev/null 2>"$work/$name.log"
  cat "$work/$name.time" >>"$work/$name.times"
}

for i in $(seq "$runs"); do
  start_registry "$work/ferry-dest-$i"
  timed ferry-cold "$ferry" sync -f "$work/images.txt" --to "$REGISTRY/mirror" --drop-registry-host \
    --ca-file "$source_ca" --ca-file "$REGISTRY_CA" --cache "$work/ferry-cache-$i" --progress none
  timed ferry-again "$ferry" sync -f "$work/images.txt" --to "$REGISTRY/mirror" --drop-registry-host \
    --ca-file "$source_ca" --ca-file "$REGISTRY_CA" --cache "$work/ferry-cache-$i" --progress none
  digest=$(skopeo inspect --raw --cert-dir "$REGISTRY_CERTS" "docker://$REGISTRY/mirror/bench/multi:1" | sha256sum)
  stop_registry
  rm -rf "$work/ferry-dest-$i" "$work/ferry-cache-$i"
  start_registry "$work/skopeo-dest-$i"
  timed skopeo-cold skopeo sync --all --preserve-digests --src yaml --dest docker \
    --dest-cert-dir "$REGISTRY_CERTS" "$work/skopeo-sync.yaml" "$REGISTRY/mirror"
  timed skopeo-again skopeo sync --all --preserve-digests --src yaml --dest docker \
    --dest-cert-dir "$REGISTRY_CERTS" "$work/skopeo-sync.yaml" "$REGISTRY/mirror"
  # (skopeo sync keeps only the last component of a repository's name)
  peer=$(skopeo inspect --raw --cert-dir "$REGISTRY_CERTS" "docker://$REGISTRY/mirror/multi:1" | sha256sum)
  [ "$digest" = "$peer" ] || { echo "the two copies of bench/multi:1 differ" >&2; exit 1; }
  stop_registry
  rm -rf "$work/skopeo-dest-$i"
  echo "   run $i: ferry $(tail -1 "$work/ferry-cold.times" | cut -d' ' -f1)s then $(tail -1 "$work/ferry-again.times" | cut -d' ' -f1)s;" \
    "skopeo sync $(tail -1 "$work/skopeo-cold.times" | cut -d' ' -f1)s then $(tail -1 "$work/skopeo-again.times" | cut -d' ' -f1)s"
done
col() { cut -d' ' -f"$2" "$work/$1.times"; }
# shellcheck disable=SC2046 # one argument per run
{
  fc=$(best $(col ferry-cold 1))
  fa=$(best $(col ferry-again 1))
  sc=$(best $(col skopeo-cold 1))
  sa=$(best $(col skopeo-again 1))
  rss=$(( $(sort -n <(col ferry-cold 2) | tail -1) / 1024 ))
}
echo
echo "| sync of $(wc -l <"$work/images.txt") images (best of $runs) | ferry sync | skopeo sync | ratio |"
echo "|---|---|---|---|"
echo "| into an empty registry, s | $fc | $sc | $(bench_ratio "$sc" "$fc")x faster |"
echo "| again, nothing to copy, s | $fa | $sa | $(bench_ratio "$sa" "$fa")x faster |"
echo "| ferry's peak RSS, MiB | $rss | | |"
