#!/usr/bin/env bash
# Benchmark: volumes. In one run, a bundle of about 2.5 GiB (five images of a 320 MiB and a
# 64 MiB layer, one of a BIG_LAYER layer, default 600 MiB), written as one bundle and as volumes
# of 512 MiB (a 600 MiB layer is carried in two parts; give 400M to keep every blob whole) and
# of 1 GiB (every blob whole):
#   export: each from a cold cache (plain and 512M), then each again from a warm one (the
#   writing alone); import: the bundle, and each set's volumes in reverse order, one run per
#   volume, each into an empty site.
# Goals (issue 12): volume export <= 1.1x the plain export; reverse-order import <= 1.1x.
#
#   Benchmarks/volumes.sh [BIG_LAYER]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
big=${1:-600M}

build_ferry . | tail -n 1 # the release build install.sh ships
bin=.build-static/release
work=$(mktemp -d -t ferry-bench-volumes-XXXXXX)
trap 'stop_registry; rm -rf "$work"' EXIT

start_registry "$work/registry"
specs=()
for name in a b c d e; do specs+=("bench/vol-$name:1=320M,64M"); done
specs+=("bench/vol-big:1=$big")
"$PYTHON" scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" "${specs[@]}" >"$work/images.txt"

export_once() { # NAME CACHE [ARGS...]: prints seconds
  local name=$1 cache=$2
  shift 2
  rm -f "$work/$name.tar" "$work/$name".vol*.tar*
  local t0
  t0=$(bench_now)
  "$bin/ferry" export -f "$work/images.txt" -o "$work/$name.tar" --ca-file "$REGISTRY_CA" --cache "$cache" \
    --progress none "$@" >/dev/null
  bench_seconds "$t0" "$(bench_now)"
}
cold_plain=$(export_once plain "$work/cache-plain")
cold_512=$(export_once v512 "$work/cache-v512" --volume-size 512M)
warm_plain=$(export_once plain "$work/cache-plain")
warm_512=$(export_once v512 "$work/cache-plain" --volume-size 512M)
warm_1g=$(export_once v1g "$work/cache-plain" --volume-size 1G)
stop_registry

import_reversed() { # NAME: imports NAME.volNNN.tar last to first into an empty site; prints seconds
  local volumes=("$work/$1".vol*.tar) t0 i
  t0=$(bench_now)
  for ((i = ${#volumes[@]} - 1; i >= 0; i--)); do
    "$bin/ferry-appliance" import "${volumes[$i]}" --data-dir "$work/site-$1" >/dev/null
  done
  bench_seconds "$t0" "$(bench_now)"
}
t0=$(bench_now)
"$bin/ferry-appliance" import "$work/plain.tar" --data-dir "$work/site-plain" >/dev/null
import_plain=$(bench_seconds "$t0" "$(bench_now)")
import_512=$(import_reversed v512)
import_1g=$(import_reversed v1g)
for site in v512 v1g; do
  "$bin/ferry-appliance" images --data-dir "$work/site-$site" | grep -q 'bench/vol-big' ||
    { echo "the $site volumes did not import" >&2; exit 1; }
done

count() { local v=("$work/$1".vol*.tar); echo "${#v[@]}"; }
echo "bundle: $(($(stat -c %s "$work/plain.tar") / 1048576)) MiB; $(count v512) volumes of 512 MiB, $(count v1g) of 1 GiB (largest layer $big)"
printf '%-26s %-7s %-12s %-12s\n' "seconds (ratio to plain)" plain "512M" "1G"
printf '%-26s %-7s %-12s %-12s\n' "export, cold cache" "$cold_plain" "$cold_512 ($(bench_ratio "$cold_512" "$cold_plain"))" "-"
printf '%-26s %-7s %-12s %-12s\n' "export, warm cache" "$warm_plain" "$warm_512 ($(bench_ratio "$warm_512" "$warm_plain"))" \
  "$warm_1g ($(bench_ratio "$warm_1g" "$warm_plain"))"
printf '%-26s %-7s %-12s %-12s\n' "import, volumes reversed" "$import_plain" \
  "$import_512 ($(bench_ratio "$import_512" "$import_plain"))" "$import_1g ($(bench_ratio "$import_1g" "$import_plain"))"
