#!/usr/bin/env bash
# Benchmark: pushes, in one run, both targets over TLS on 127.0.0.1.
#
#   Benchmarks/push.sh [LARGE_LAYER_SIZE]      (default 1G)
#
# (1) `skopeo copy --preserve-digests oci:… docker://…` of one image with a LARGE_LAYER_SIZE layer
#     into an empty ferry-appliance and into an empty distribution registry (best of RUNS, default 2,
#     each into a fresh server).
# (2) `ferry push` of a bundle (the large image, a two-platform image, three images sharing a 64 MiB
#     base) into an empty distribution registry, against `skopeo copy oci-archive:BUNDLE:REF docker://…`
#     of each image of the same bundle into another empty one (best of RUNS).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
large=${1:-1G}
runs=${RUNS:-2}

swift build -c release --product ferry 2>&1 | tail -1
swift build -c release --product ferry-appliance 2>&1 | tail -1
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d -t ferry-bench-push-XXXXXX)
appliance_pid=
cleanup() {
  stop_registry
  if [ -n "$appliance_pid" ]; then kill "$appliance_pid" 2>/dev/null || true; wait "$appliance_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== content"
start_registry "$work/source"
python3 scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" \
  "bench/large:1=$large" "bench/multi:1=base:32M,16M@linux/amd64+linux/arm64/v8" \
  bench/app-a:1=base:64M,8M bench/app-b:1=base:64M,8M bench/app-c:1=base:64M,8M >"$work/images.txt"
large_ref=$(head -1 "$work/images.txt")
skopeo copy --quiet --src-cert-dir "$REGISTRY_CERTS" "docker://$large_ref" "oci:$work/large-oci:x"
"$bin/ferry" export -f "$work/images.txt" -o "$work/site.tar" --ca-file "$REGISTRY_CA" --cache "$work/cache" \
  --progress none >/dev/null
stop_registry
REGISTRY_PID=
rm -rf "$work/cache" "$work/source/data"
echo "   large image: $(du -sm "$work/large-oci" | cut -f1) MiB; bundle: $(($(stat -c %s "$work/site.tar") / 1048576)) MiB"

start_appliance() { # DIR: sets APPLIANCE, APPLIANCE_CERTS
  mkdir -p "$1"
  printf 'bench-password' | "$bin/ferry-appliance" user add bench --password-stdin --role push --data-dir "$1" >/dev/null
  local port
  port=$(free_port)
  "$bin/ferry-appliance" serve --data-dir "$1" --listen "127.0.0.1:$port" --access-log off >"$1.log" 2>&1 &
  appliance_pid=$!
  APPLIANCE="127.0.0.1:$port"
  for _ in $(seq 100); do curl -s --cacert "$1/tls/ca.crt" "https://$APPLIANCE/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  APPLIANCE_CERTS="$1/certs"
  mkdir -p "$APPLIANCE_CERTS"
  cp "$1/tls/ca.crt" "$APPLIANCE_CERTS/ca.crt"
}
stop_appliance() { kill "$appliance_pid"; wait "$appliance_pid" 2>/dev/null || true; appliance_pid=; }

echo "== (1) skopeo copy of the large image"
ours=()
theirs=()
for i in $(seq "$runs"); do
  start_appliance "$work/appliance-$i"
  t0=$(bench_now)
  skopeo copy --quiet --preserve-digests --dest-cert-dir "$APPLIANCE_CERTS" --dest-creds bench:bench-password \
    "oci:$work/large-oci:x" "docker://$APPLIANCE/bench/large:1"
  ours+=("$(bench_seconds "$t0" "$(bench_now)")")
  stop_appliance
  rm -rf "$work/appliance-$i"
  start_registry "$work/peer-$i"
  t0=$(bench_now)
  skopeo copy --quiet --preserve-digests --dest-cert-dir "$REGISTRY_CERTS" "oci:$work/large-oci:x" \
    "docker://$REGISTRY/bench/large:1"
  theirs+=("$(bench_seconds "$t0" "$(bench_now)")")
  stop_registry
  REGISTRY_PID=
  rm -rf "$work/peer-$i"
  echo "   run $i: into ferry-appliance ${ours[-1]}s, into the distribution registry ${theirs[-1]}s"
done
skopeo_ours=$(bench_min "${ours[@]}")
skopeo_theirs=$(bench_min "${theirs[@]}")

echo "== (2) ferry push of the bundle vs skopeo per image, into the distribution registry"
ferry_runs=()
skopeo_runs=()
for i in $(seq "$runs"); do
  start_registry "$work/ferry-target-$i"
  t0=$(bench_now)
  "$bin/ferry" push "$work/site.tar" --to "$REGISTRY" --ca-file "$REGISTRY_CA" --progress none >/dev/null
  ferry_runs+=("$(bench_seconds "$t0" "$(bench_now)")")
  stop_registry
  REGISTRY_PID=
  rm -rf "$work/ferry-target-$i"
  start_registry "$work/skopeo-target-$i"
  t0=$(bench_now)
  while read -r reference; do
    name=${reference#*/}
    skopeo copy --quiet --all --preserve-digests --dest-cert-dir "$REGISTRY_CERTS" \
      "oci-archive:$work/site.tar:$reference" "docker://$REGISTRY/${name}"
  done <"$work/images.txt"
  skopeo_runs+=("$(bench_seconds "$t0" "$(bench_now)")")
  stop_registry
  REGISTRY_PID=
  rm -rf "$work/skopeo-target-$i"
  echo "   run $i: ferry push ${ferry_runs[-1]}s, skopeo per image ${skopeo_runs[-1]}s"
done
ferry_best=$(bench_min "${ferry_runs[@]}")
skopeo_best=$(bench_min "${skopeo_runs[@]}")

echo
echo "| measure (best of $runs) | ferry | peer | ratio |"
echo "|---|---|---|---|"
echo "| skopeo copy of a $large-layer image, s | $skopeo_ours (into ferry-appliance) | $skopeo_theirs (into distribution registry) | appliance $(bench_ratio "$skopeo_theirs" "$skopeo_ours")x the registry's speed |"
echo "| push of the bundle into the distribution registry, s | $ferry_best (ferry push) | $skopeo_best (skopeo copy per image) | $(bench_ratio "$skopeo_best" "$ferry_best")x faster |"
