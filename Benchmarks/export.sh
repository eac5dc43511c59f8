#!/usr/bin/env bash
# Benchmark: `ferry export` against the wire and against skopeo, same images from the same local
# distribution registry over TLS, in one run.
#
#   Benchmarks/export.sh [LARGE_LAYER_SIZE]      (default 192M; SMALL=500 small images, 0 to skip)
#
# Image set: one image with a LARGE_LAYER_SIZE layer, a two-platform image, and three images that
# share a 64 MiB base layer. Measured, each with an empty destination:
#   the wire      `curl --parallel` (6 at once) of every blob into files
#   skopeo        `skopeo copy --all` of each image into one oci: directory, then `tar`
#   ferry cold    `ferry export` with an empty cache; --no-cache; warm (the cache full);
#                 resumed (--no-cache, killed with SIGKILL when half the bytes were written, run again);
#                 volumes (--no-cache --volume-size VOLUME_SIZE, default 100M: the large layer in parts)
# Then SMALL images of one 1 MiB layer each: ferry export (--no-cache) against the wire (curl of
# each image's manifest and blobs, 6 at once) and skopeo + tar.
# Each timed row runs RUNS times (default 2); the table reports the best, with peak RSS and the bytes
# written to storage (write_bytes of /proc/PID/io) against the bundle's size. ROWS picks rows
# (default "wire skopeo cold nocache warm resumed volumes"). Each row starts with the previous row's
# files removed and synced: deleting 700 MiB of them inside the next row cost it 0.3-1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
large=${1:-192M}
runs=${RUNS:-2}
small=${SMALL:-500}
volume_size=${VOLUME_SIZE:-100M}

swift build -c release --product ferry 2>&1 | tail -1
ferry=$(swift build -c release --show-bin-path)/ferry
work=$(mktemp -d -t ferry-bench-XXXXXX)
trap 'stop_registry; rm -rf "$work"' EXIT
start_registry "$work/registry"
"$PYTHON" scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" \
  "bench/large:1=$large" "bench/multi:1=base:32M,16M@linux/amd64+linux/arm64/v8" \
  bench/app-a:1=base:64M,8M bench/app-b:1=base:64M,8M bench/app-c:1=base:64M,8M >"$work/images.txt"

# wire_urls OUTPUT PATTERN [TAG]: every blob the repositories named by PATTERN (a glob) link, once,
# as curl config lines (the URLs a wire row downloads); with TAG, each one's manifest of that tag.
wire_urls() {
  local output=$1 pattern=$2 tag=${3:-} repositories=$work/registry/data/docker/registry/v2/repositories
  local layers repo link hex
  local -A seen=()
  : >"$output"
  # shellcheck disable=SC2231 # the pattern is a glob
  for layers in "$repositories"/$pattern/_layers/sha256; do
    repo=${layers#"$repositories"/}
    repo=${repo%/_layers/sha256}
    [ -n "$tag" ] && printf 'url = "https://%s/v2/%s/manifests/%s"\noutput = "%s/wire/m-%s"\n' \
      "$REGISTRY" "$repo" "$tag" "$work" "${repo//\//-}" >>"$output"
    for link in "$layers"/*; do
      hex=$(basename "$link")
      [ -n "${seen[$hex]-}" ] && continue
      seen[$hex]=1
      printf 'url = "https://%s/v2/%s/blobs/sha256:%s"\noutput = "%s/wire/%s"\n' "$REGISTRY" "$repo" "$hex" "$work" "$hex" >>"$output"
    done
  done
}
wire_urls "$work/urls.txt" '*/*'
echo "images: $(wc -l <"$work/images.txt"), blobs: $(grep -c '^url' "$work/urls.txt")"

measure() { "$PYTHON" Benchmarks/measure.py --out "$work/m" -- "$@" >/dev/null && cat "$work/m"; }

run_wire() { # [URLS]
  rm -rf "$work/wire" && mkdir -p "$work/wire"
  measure curl -sS --no-progress-meter --fail --parallel --parallel-max 6 --cacert "$REGISTRY_CA" -K "${1:-$work/urls.txt}" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json"
}
run_skopeo() {
  rm -rf "$work/oci" "$work/skopeo.tar"
  local start end
  start=$(bench_now)
  while read -r reference; do
    skopeo copy --quiet --all --src-cert-dir "$REGISTRY_CERTS" "docker://$reference" "oci:$work/oci:$reference"
  done <"$1"
  tar -cf "$work/skopeo.tar" -C "$work/oci" .
  sync -f "$work/skopeo.tar"
  end=$(bench_now)
  echo "$(bench_seconds "$start" "$end") 0 0"
}
ferry_export() { # LIST OUTPUT ARGS...
  local list=$1 output=$2
  shift 2
  measure "$ferry" export -f "$list" -o "$output" --ca-file "$REGISTRY_CA" --progress none "$@"
}
run_cold() { rm -rf "$work/cache" "$work/ferry.tar"*; ferry_export "$work/images.txt" "$work/ferry.tar" --cache "$work/cache"; }
run_nocache() { rm -f "$work/ferry.tar"*; ferry_export "$work/images.txt" "$work/ferry.tar" --no-cache; }
run_volumes() {
  rm -f "$work/ferry"*.tar* && ferry_export "$work/images.txt" "$work/ferry.tar" --no-cache --volume-size "$volume_size"
}
run_warm() { rm -f "$work/ferry.tar"*; ferry_export "$work/images.txt" "$work/ferry.tar" --cache "$work/cache"; }
run_resumed() {
  rm -f "$work/ferry.tar"*
  local half pid
  half=$(($(stat -c %s "$work/bundle-size") / 2))
  "$ferry" export -f "$work/images.txt" -o "$work/ferry.tar" --ca-file "$REGISTRY_CA" --progress none --no-cache &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    written=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io" 2>/dev/null || echo 0)
    [ "${written:-0}" -ge "$half" ] && break
    sleep 0.005
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ -e "$work/ferry.tar" ] && echo "warning: the export finished before the kill" >&2
  ferry_export "$work/images.txt" "$work/ferry.tar" --no-cache
}

# One bundle first, for its size (the file's size stands in; only its length is read).
ferry_export "$work/images.txt" "$work/ferry.tar" --no-cache >/dev/null
bundle=$(stat -c %s "$work/ferry.tar")
truncate -s "$bundle" "$work/bundle-size"

declare -A best=() rss=() wrote=()
read -r -a rows <<<"${ROWS:-wire skopeo cold nocache warm resumed volumes}"
for i in $(seq "$runs"); do
  for row in "${rows[@]}"; do
    # The previous row's output is removed, and what it left for the kernel to write back (and
    # the removal itself) is done now, not during this row.
    rm -rf "$work/wire" "$work/oci" "$work/skopeo.tar" "$work/ferry"*.tar*
    [ "$row" = cold ] && rm -rf "$work/cache"
    sync
    case $row in
      wire) read -r s m w < <(run_wire) ;;
      skopeo) read -r s m w < <(run_skopeo "$work/images.txt") ;;
      cold) read -r s m w < <(run_cold) ;;
      nocache) read -r s m w < <(run_nocache) ;;
      warm) read -r s m w < <(run_warm) ;;
      resumed) read -r s m w < <(run_resumed) ;;
      volumes) read -r s m w < <(run_volumes) ;;
    esac
    echo "run $i $row: ${s}s, peak RSS $((m / 1024)) MiB, wrote $((w / 1048576)) MiB"
    if [ -z "${best[$row]-}" ] || "$PYTHON" -c "import sys; sys.exit(not $s < ${best[$row]})"; then
      best[$row]=$s rss[$row]=$m wrote[$row]=$w
    fi
  done
done

echo
echo "bundle: $((bundle / 1048576)) MiB"
echo "| | best of $runs (s) | / wire | skopeo / this | peak RSS (MiB) | written / bundle |"
echo "|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
  name=$row
  case $row in
    wire) name="curl --parallel (the wire)" ;;
    skopeo) name="skopeo copy + tar" ;;
    cold) name="ferry export, cold cache" ;;
    nocache) name="ferry export --no-cache" ;;
    warm) name="ferry export, warm cache" ;;
    resumed) name="ferry export --no-cache, resumed after kill -9 at half" ;;
    volumes) name="ferry export --no-cache --volume-size $volume_size" ;;
  esac
  # A ratio to a row left out of ROWS is left blank.
  to_wire='' by_skopeo=''
  [ -n "${best[wire]-}" ] && to_wire=$(bench_ratio "${best[$row]}" "${best[wire]}")
  [ -n "${best[skopeo]-}" ] && by_skopeo=$(bench_ratio "${best[skopeo]}" "${best[$row]}")
  echo "| $name | ${best[$row]} | $to_wire | $by_skopeo | $((rss[$row] / 1024)) | $(bench_ratio "${wrote[$row]}" "$bundle") |"
done

if [ "$small" -gt 0 ]; then
  specs=()
  for i in $(seq "$small"); do specs+=("bench/small-$i:1=1M"); done
  "$PYTHON" scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" "${specs[@]}" >"$work/small.txt"
  # The wire for them: the same requests ferry makes (each image's manifest by tag, each blob),
  # 6 at once.
  wire_urls "$work/small-urls.txt" 'bench/small-*' 1
  fs='' ws=''
  for i in $(seq "$runs"); do
    rm -rf "$work/wire" "$work/small.tar"*
    sync
    read -r s m _ < <(ferry_export "$work/small.txt" "$work/small.tar" --no-cache)
    echo "run $i small ferry: ${s}s"
    if [ -z "$fs" ] || "$PYTHON" -c "import sys; sys.exit(not $s < $fs)"; then fs=$s fm=$m; fi
    rm -rf "$work/small.tar"*
    sync
    read -r s _ _ < <(run_wire "$work/small-urls.txt")
    echo "run $i small wire: ${s}s"
    if [ -z "$ws" ] || "$PYTHON" -c "import sys; sys.exit(not $s < $ws)"; then ws=$s; fi
  done
  rm -rf "$work/wire"
  sync
  read -r ss _ _ < <(run_skopeo "$work/small.txt")
  echo
  echo "| $small images of 1 MiB | seconds | |"
  echo "|---|---|---|"
  echo "| curl --parallel of their manifests and blobs (the wire), best of $runs | $ws | |"
  echo "| ferry export --no-cache, best of $runs | $fs | $(bench_ratio "$fs" "$ws")x the wire, peak RSS $((fm / 1024)) MiB |"
  echo "| skopeo copy + tar | $ss | ferry is $(bench_ratio "$ss" "$fs")x faster |"
fi
