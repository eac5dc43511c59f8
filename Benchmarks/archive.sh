#!/usr/bin/env bash
# Benchmark: another tool's archive vs a Ferry bundle of the same content. In one run: an image of
# four 512 MiB layers (2 GiB) copied by skopeo into an oci-archive (digests preserved) and exported
# by ferry into a bundle; each imported into an empty site. The archive is read twice (a first pass
# for its structure and small documents, then the verifying pass that stores every blob); the
# bundle once. Goal (issue 17): the archive's import within 1.3x of the bundle's.
#
#   Benchmarks/archive.sh [LAYER_SIZE]      (default 512M)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
layer=${1:-512M}

build_ferry . | tail -n 1 # the release build install.sh ships
bin=.build-static/release
work=$(mktemp -d -t ferry-bench-archive-XXXXXX)
trap 'stop_registry; rm -rf "$work"' EXIT

start_registry "$work/registry"
"$PYTHON" scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" \
  "bench/archive:1=$layer,$layer,$layer,$layer" >"$work/images.txt"
skopeo copy -q --preserve-digests --src-cert-dir "$REGISTRY_CERTS" "docker://$REGISTRY/bench/archive:1" \
  "oci-archive:$work/archive.tar:1"
"$bin/ferry" export -f "$work/images.txt" -o "$work/bundle.tar" --ca-file "$REGISTRY_CA" --cache "$work/cache" \
  --progress none >/dev/null
stop_registry

t0=$(bench_now)
"$bin/ferry-appliance" import "$work/bundle.tar" --data-dir "$work/site-bundle" >/dev/null
bundle_import=$(bench_seconds "$t0" "$(bench_now)")
t0=$(bench_now)
"$bin/ferry-appliance" import "$work/archive.tar" --name bench/archive --data-dir "$work/site-archive" >/dev/null
archive_import=$(bench_seconds "$t0" "$(bench_now)")

echo "bundle: $(($(stat -c %s "$work/bundle.tar") / 1048576)) MiB; oci-archive: $(($(stat -c %s "$work/archive.tar") / 1048576)) MiB"
printf '%-28s %-8s\n' import seconds
printf '%-28s %-8s\n' "Ferry bundle" "$bundle_import"
printf '%-28s %-8s\n' "skopeo oci-archive" "$archive_import ($(bench_ratio "$archive_import" "$bundle_import"))"
