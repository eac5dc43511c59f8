#!/usr/bin/env bash
# Benchmark: `ferry sync` against `skopeo sync`, registry to registry, in one run.
#
#   Benchmarks/sync.sh [LARGE_LAYER_SIZE]      (default 1G)
#
# Source: a distribution registry over TLS on 127.0.0.1 with two sets: the export benchmark's (one
# image with a LARGE_LAYER_SIZE layer, a two-platform image, three images sharing a 64 MiB base), and
# SMALL (default 200) images of 1 MiB. For each set, each tool copies every image, all platforms,
# digests preserved, into an empty distribution registry over TLS (a fresh one per run, RUNS runs
# alternating, default 2), then runs again with nothing to do. ferry runs with its defaults.
# image-syncer is not in Debian and cannot be fetched here, so it is not measured.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
large=${1:-1G}
runs=${RUNS:-2}
small_count=${SMALL:-200}

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

start_registry "$work/source"
source_pid=$REGISTRY_PID
REGISTRY_PID=
source=$REGISTRY
source_ca=$REGISTRY_CA
source_certs=$REGISTRY_CERTS
python3 scripts/make-images.py --registry "$source" --cert-dir "$source_certs" \
  "bench/large:1=$large" "bench/multi:1=base:32M,16M@linux/amd64+linux/arm64/v8" \
  bench/app-a:1=base:64M,8M bench/app-b:1=base:64M,8M bench/app-c:1=base:64M,8M >"$work/large-set.txt"
small=()
for i in $(seq "$small_count"); do small+=("bench/small-$i:1=1M"); done
python3 scripts/make-images.py --registry "$source" --cert-dir "$source_certs" "${small[@]}" >"$work/small-set.txt"
echo "source holds $(($(du -sb "$work/source/data" | cut -f1) / 1048576)) MiB"

# timed NAME COMMAND...: runs it, appends "seconds peak-KiB" to $work/NAME.times
timed() {
  local name=$1
  shift
  /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" >/dev/null 2>"$work/$name.log"
  cat "$work/$name.time" >>"$work/$name.times"
}
col() { cut -d' ' -f"$2" "$work/$1.times"; }

# measure SET: every image of $work/SET.txt by each tool into a fresh registry, twice each (the
# second with nothing to copy), RUNS times alternating; prints one table row per case.
measure() {
  local set=$1 first
  first=$(head -1 "$work/$set.txt")
  first=${first#*/}
  {
    echo "$source:"
    echo "  cert-dir: $source_certs"
    echo "  images:"
    while read -r reference; do
      name=${reference#*/}
      echo "    ${name%:*}: [\"${name##*:}\"]"
    done <"$work/$set.txt"
  } >"$work/$set.yaml"
  for i in $(seq "$runs"); do
    start_registry "$work/ferry-dest"
    timed "$set-ferry-cold" "$ferry" sync -f "$work/$set.txt" --to "$REGISTRY/mirror" --drop-registry-host \
      --ca-file "$source_ca" --ca-file "$REGISTRY_CA" --cache "$work/ferry-cache" --progress none
    timed "$set-ferry-again" "$ferry" sync -f "$work/$set.txt" --to "$REGISTRY/mirror" --drop-registry-host \
      --ca-file "$source_ca" --ca-file "$REGISTRY_CA" --cache "$work/ferry-cache" --progress none
    digest=$(skopeo inspect --raw --cert-dir "$REGISTRY_CERTS" "docker://$REGISTRY/mirror/$first" | sha256sum)
    stop_registry
    rm -rf "$work/ferry-dest" "$work/ferry-cache"
    start_registry "$work/skopeo-dest"
    timed "$set-skopeo-cold" skopeo sync --all --preserve-digests --src yaml --dest docker \
      --dest-cert-dir "$REGISTRY_CERTS" "$work/$set.yaml" "$REGISTRY/mirror"
    timed "$set-skopeo-again" skopeo sync --all --preserve-digests --src yaml --dest docker \
      --dest-cert-dir "$REGISTRY_CERTS" "$work/$set.yaml" "$REGISTRY/mirror"
    # (skopeo sync keeps only the last component of a repository's name)
    peer=$(skopeo inspect --raw --cert-dir "$REGISTRY_CERTS" "docker://$REGISTRY/mirror/${first#*/}" | sha256sum)
    [ "$digest" = "$peer" ] || { echo "the two copies of $first differ" >&2; exit 1; }
    stop_registry
    rm -rf "$work/skopeo-dest"
    echo "   $set run $i: ferry $(tail -1 "$work/$set-ferry-cold.times" | cut -d' ' -f1)s then" \
      "$(tail -1 "$work/$set-ferry-again.times" | cut -d' ' -f1)s; skopeo sync" \
      "$(tail -1 "$work/$set-skopeo-cold.times" | cut -d' ' -f1)s then $(tail -1 "$work/$set-skopeo-again.times" | cut -d' ' -f1)s" >&2
  done
  local fc fa sc sa rss
  # shellcheck disable=SC2046 # one argument per run
  {
    fc=$(bench_min $(col "$set-ferry-cold" 1))
    fa=$(bench_min $(col "$set-ferry-again" 1))
    sc=$(bench_min $(col "$set-skopeo-cold" 1))
    sa=$(bench_min $(col "$set-skopeo-again" 1))
  }
  rss=$(($(col "$set-ferry-cold" 2 | sort -n | tail -1) / 1024))
  echo "| $2, into an empty registry, s | $fc | $sc | $(bench_ratio "$sc" "$fc")x | $rss |"
  echo "| $2, again with nothing to copy, s | $fa | $sa | $(bench_ratio "$sa" "$fa")x | |"
}

rows=$(measure large-set "5 images, $large layer + 2 platforms + shared 64M base")
rows+=$'\n'$(measure small-set "$small_count images of 1 MiB")
echo
echo "| sync (best of $runs) | ferry sync | skopeo sync | skopeo / ferry | ferry peak RSS, MiB |"
echo "|---|---|---|---|---|"
echo "$rows"
