#!/usr/bin/env bash
# Benchmark: the second transfer. A site holds v1 of five images; v2 shares each image's 96 MiB base
# and adds a 16 MiB layer. In one run: v2 exported in full and as a delta against the site's
# inventory (bytes and seconds, each from a cold cache), each imported into a copy of the site
# (seconds), and an import of the full v2 bundle killed (SIGKILL) part way and run again (seconds,
# blobs written again vs found already stored).
#
#   Benchmarks/delta.sh [BASE_SIZE] [NEW_SIZE]      (default 96M 16M)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
base=${1:-96M}
new=${2:-16M}

build_ferry . | tail -n 1 # the release build install.sh ships
bin=.build-static/release
work=$(mktemp -d -t ferry-bench-delta-XXXXXX)
trap 'stop_registry; rm -rf "$work"' EXIT
mib() { echo $(($(stat -c %s "$1") / 1048576)); }

start_registry "$work/registry"
v1=() v2=()
for name in a b c d e; do
  v1+=("bench/app-$name:1=base:$base#$name,$new")
  v2+=("bench/app-$name:2=base:$base#$name,$new")
done
"$PYTHON" scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" "${v1[@]}" "${v2[@]}" \
  >"$work/all.txt"
grep ':1$' "$work/all.txt" >"$work/v1.txt"
grep ':2$' "$work/all.txt" >"$work/v2.txt"

"$bin/ferry" export -f "$work/v1.txt" -o "$work/v1.tar" --ca-file "$REGISTRY_CA" --cache "$work/cache-v1" \
  --progress none >/dev/null
for site in full delta resume; do
  "$bin/ferry-appliance" import "$work/v1.tar" --data-dir "$work/site-$site" >/dev/null
done
"$bin/ferry-appliance" inventory -o "$work/site.inventory.json" --data-dir "$work/site-delta" 2>/dev/null

t0=$(bench_now)
"$bin/ferry" export -f "$work/v2.txt" -o "$work/full.tar" --ca-file "$REGISTRY_CA" --cache "$work/cache-full" \
  --progress none >/dev/null
t1=$(bench_now)
"$bin/ferry" export -f "$work/v2.txt" -o "$work/delta.tar" --ca-file "$REGISTRY_CA" --cache "$work/cache-delta" \
  --against "$work/site.inventory.json" --progress none >/dev/null
t2=$(bench_now)
full_export=$(bench_seconds "$t0" "$t1")
delta_export=$(bench_seconds "$t1" "$t2")
stop_registry

t0=$(bench_now)
"$bin/ferry-appliance" import "$work/full.tar" --data-dir "$work/site-full" >/dev/null
t1=$(bench_now)
"$bin/ferry-appliance" import "$work/delta.tar" --data-dir "$work/site-delta" >/dev/null
t2=$(bench_now)
full_import=$(bench_seconds "$t0" "$t1")
delta_import=$(bench_seconds "$t1" "$t2")

printf '%-8s %-8s %-10s %-10s\n' bundle MiB export_s import_s
printf '%-8s %-8s %-10s %-10s\n' full "$(mib "$work/full.tar")" "$full_export" "$full_import"
printf '%-8s %-8s %-10s %-10s\n' delta "$(mib "$work/delta.tar")" "$delta_export" "$delta_import"
echo "inventory: $(stat -c %s "$work/site.inventory.json") bytes"

# Resume: the full v2 import killed after half its time, then run again.
"$bin/ferry-appliance" import "$work/full.tar" --data-dir "$work/site-resume" >/dev/null &
pid=$!
sleep "$("$PYTHON" -c "import sys; print(float(sys.argv[1]) / 2)" "$full_import")"
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
t0=$(bench_now)
"$bin/ferry-appliance" import "$work/full.tar" --data-dir "$work/site-resume" --json >"$work/resume.json"
t1=$(bench_now)
"$PYTHON" - "$work/resume.json" "$(bench_seconds "$t0" "$t1")" <<'PY'
import json, sys
result = json.load(open(sys.argv[1]))
result = result[0] if isinstance(result, list) else result.get("results", [result])[0]
print(f"resumed import: {sys.argv[2]} s, {result['blobsWritten']} blob(s) written, "
      f"{result['blobsAlreadyPresent']} already stored (the whole bundle is read and verified again)")
PY
