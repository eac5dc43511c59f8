#!/usr/bin/env bash
# Benchmark: volumes. In one run, a bundle of about 2.3 GiB (five images of a 320 MiB layer and a
# 64 MiB layer, and one of a 600 MiB layer, which a 512 MiB volume carries in parts):
#   export as one bundle vs with --volume-size (each from a cold cache, then each again from a
#   warm one: the writing alone); import of the bundle vs of the volumes in reverse order, one
#   run per volume, each into an empty site.
# Goals (issue 12): volume export <= 1.1x the plain export; reverse-order import <= 1.1x.
#
#   Benchmarks/volumes.sh [VOLUME_SIZE]      (default 512M)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
size=${1:-512M}

build_ferry . | tail -n 1 # the release build install.sh ships
bin=.build-static/release
work=$(mktemp -d -t ferry-bench-volumes-XXXXXX)
trap 'stop_registry; rm -rf "$work"' EXIT
now() { date +%s.%N; }
seconds() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$@"; }
ratio() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[2]) / float(sys.argv[1]):.2f}')" "$@"; }

start_registry "$work/registry"
specs=()
for name in a b c d e; do specs+=("bench/vol-$name:1=320M,64M"); done
specs+=("bench/vol-big:1=600M")
"$PYTHON" scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" "${specs[@]}" >"$work/images.txt"

export_once() { # NAME CACHE [ARGS...]
  local name=$1 cache=$2
  shift 2
  local t0
  t0=$(now)
  "$bin/ferry" export -f "$work/images.txt" -o "$work/$name.tar" --ca-file "$REGISTRY_CA" --cache "$cache" \
    --progress none "$@" >/dev/null
  seconds "$t0" "$(now)"
}
plain_cold=$(export_once plain "$work/cache-plain")
volume_cold=$(export_once vols "$work/cache-vols" --volume-size "$size")
rm -f "$work/plain.tar" "$work"/vols.vol*.tar*
plain_warm=$(export_once plain "$work/cache-plain")
volume_warm=$(export_once vols "$work/cache-vols" --volume-size "$size")
stop_registry
volumes=("$work"/vols.vol*.tar)
count=${#volumes[@]}
largest=$(stat -c %s "$work"/vols.vol*.tar | sort -n | tail -n 1)

t0=$(now)
"$bin/ferry-appliance" import "$work/plain.tar" --data-dir "$work/site-plain" >/dev/null
plain_import=$(seconds "$t0" "$(now)")
t0=$(now)
for ((i = count - 1; i >= 0; i--)); do
  volume=${volumes[$i]}
  "$bin/ferry-appliance" import "$volume" --data-dir "$work/site-vols" >/dev/null
done
volume_import=$(seconds "$t0" "$(now)")
"$bin/ferry-appliance" images --data-dir "$work/site-vols" | grep -q 'bench/vol-big' ||
  { echo "the volumes did not import" >&2; exit 1; }

echo "bundle: $(($(stat -c %s "$work/plain.tar") / 1048576)) MiB; $count volumes of at most $size (largest $((largest / 1048576)) MiB)"
printf '%-24s %-8s %-8s %-6s\n' step plain volumes ratio
printf '%-24s %-8s %-8s %-6s\n' "export (cold cache)" "$plain_cold" "$volume_cold" "$(ratio "$plain_cold" "$volume_cold")"
printf '%-24s %-8s %-8s %-6s\n' "export (warm cache)" "$plain_warm" "$volume_warm" "$(ratio "$plain_warm" "$volume_warm")"
printf '%-24s %-8s %-8s %-6s\n' "import (volumes reversed)" "$plain_import" "$volume_import" "$(ratio "$plain_import" "$volume_import")"
