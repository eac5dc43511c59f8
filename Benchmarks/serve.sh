#!/usr/bin/env bash
# Benchmark: ferry-appliance against the distribution registry, in one run, same content in both,
# both over TLS on 127.0.0.1.
#
#   Benchmarks/serve.sh [LAYER_SIZE]      (default 2200M: the bundle is over 2 GiB)
#
# (3) Import: a bundle of one image with a LAYER_SIZE layer (exported by ferry from a first
#     registry) goes into an empty appliance with `ferry-appliance import`, and into an empty
#     distribution registry with `skopeo copy --preserve-digests oci-archive:… docker://…` (without
#     it skopeo would gzip the layer and change the digest); `openssl dgst -sha256` of
#     the same file is the reference for what one pass over it costs.
# (1) Blob GET: that layer, downloaded with curl from each server, best of RUNS (default 3), MB/s.
# (2) Manifest GET and HEAD by tag, 50 keep-alive connections, DURATION seconds (default 10): GET
#     with wrk (2 threads); HEAD with Benchmarks/headload.py (2 processes), since wrk 4.1 and ab
#     wait for the body a HEAD reply's Content-Length announces.
# The appliance's peak RSS (VmHWM) through all of it is reported last.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
size=${1:-2200M}
runs=${RUNS:-3}
duration=${DURATION:-10}
command -v wrk >/dev/null || sudo_if_needed apt-get install -y -qq --no-install-recommends wrk >/dev/null

swift build -c release --product ferry 2>&1 | tail -1
swift build -c release --product ferry-appliance 2>&1 | tail -1
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d -t ferry-bench-serve-XXXXXX)
appliance_pid=
peer_pid=
cleanup() {
  stop_registry
  for pid in $appliance_pid $peer_pid; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== content: one image with a $size layer, exported into a bundle"
start_registry "$work/source"
python3 scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" "bench/large:1=$size" \
  >"$work/images.txt"
reference=$(cat "$work/images.txt")
"$bin/ferry" export "$reference" -o "$work/site.tar" --ca-file "$REGISTRY_CA" --cache "$work/cache" \
  --progress none >/dev/null
served="${REGISTRY/:/_}/bench/large"
stop_registry
rm -rf "$work/cache" "$work/source/data"
bundle_bytes=$(stat -c %s "$work/site.tar")
echo "   bundle: $((bundle_bytes / 1048576)) MiB"

echo "== (3) import"
cat "$work/site.tar" >/dev/null # same page-cache state for everyone
start=$(date +%s.%N)
openssl dgst -sha256 "$work/site.tar" >/dev/null
openssl_s=$(bench_seconds "$start" "$(date +%s.%N)")
start=$(date +%s.%N)
"$bin/ferry-appliance" import "$work/site.tar" --data-dir "$work/appliance" >/dev/null
import_s=$(bench_seconds "$start" "$(date +%s.%N)")
start_registry "$work/peer"
peer="$REGISTRY"
peer_ca="$REGISTRY_CA"
peer_pid="$REGISTRY_PID"
REGISTRY_PID=
start=$(date +%s.%N)
skopeo copy --quiet --preserve-digests --dest-cert-dir "$work/peer/certs" "oci-archive:$work/site.tar:$reference" \
  "docker://$peer/bench/large:1"
skopeo_s=$(bench_seconds "$start" "$(date +%s.%N)")
rm -f "$work/site.tar"

port=$(free_port)
# Anonymous pulls, as the distribution registry here serves them (with credentials on every
# request, Benchmarks/scale.sh measures both).
"$bin/ferry-appliance" serve --data-dir "$work/appliance" --listen "127.0.0.1:$port" --anonymous pull --access-log off \
  >"$work/serve.log" 2>&1 &
appliance_pid=$!
ours="127.0.0.1:$port"
ours_ca="$work/appliance/tls/ca.crt"
for _ in $(seq 100); do curl -s --cacert "$ours_ca" "https://$ours/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

accept="Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
ours_manifest="https://$ours/v2/$served/manifests/1"
peer_manifest="https://$peer/v2/bench/large/manifests/1"
layer=$(curl -s --cacert "$ours_ca" -H "$accept" "$ours_manifest" | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["layers"][0]["digest"])')
peer_digest=$(curl -sI --cacert "$peer_ca" -H "$accept" "$peer_manifest" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
ours_digest=$(curl -sI --cacert "$ours_ca" -H "$accept" "$ours_manifest" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
[ "$peer_digest" = "$ours_digest" ] || { echo "different content: $peer_digest vs $ours_digest" >&2; exit 1; }

echo "== (1) blob GET ($((bundle_bytes / 1048576)) MiB layer), best of $runs"
ours_speeds=()
peer_speeds=()
for _ in $(seq "$runs"); do
  ours_speeds+=("$(curl -s --cacert "$ours_ca" -o /dev/null -w '%{speed_download}' "https://$ours/v2/$served/blobs/$layer")")
  peer_speeds+=("$(curl -s --cacert "$peer_ca" -o /dev/null -w '%{speed_download}' "https://$peer/v2/bench/large/blobs/$layer")")
done
ours_blob=$(BENCH_SCALE=1e6 bench_max "${ours_speeds[@]}")
peer_blob=$(BENCH_SCALE=1e6 bench_max "${peer_speeds[@]}")

echo "== (2) manifest GET (wrk -c50 -t2 -d${duration}s) and HEAD (headload.py, 50 connections)"
rate() { # URL: GET requests/s, and the count of non-2xx answers
  local out
  out=$(wrk -c50 -t2 "-d${duration}s" -H "$accept" "$1")
  local bad
  bad=$(echo "$out" | awk '/Non-2xx/{print $5}')
  echo "$(echo "$out" | awk '/Requests\/sec/{printf "%.0f", $2}') ${bad:-0}"
}
head_rate() { # URL CA: HEAD requests/s, and the count of non-2xx answers
  python3 Benchmarks/headload.py "$1" --ca "$2" --header "$accept" --connections 50 --duration "$duration"
}
read -r ours_get ours_get_bad < <(rate "$ours_manifest")
read -r peer_get peer_get_bad < <(rate "$peer_manifest")
read -r ours_head ours_head_bad < <(head_rate "$ours_manifest" "$ours_ca")
read -r peer_head peer_head_bad < <(head_rate "$peer_manifest" "$peer_ca")
rss_kib=$(awk '/VmHWM/{print $2}' "/proc/$appliance_pid/status")

echo
echo "| measure | ferry-appliance | distribution registry $(docker-registry --version 2>/dev/null | awk '{print $3}') | ratio |"
echo "|---|---|---|---|"
echo "| blob GET, MB/s (best of $runs) | $ours_blob | $peer_blob | $(bench_ratio "$ours_blob" "$peer_blob") |"
echo "| manifest GET, req/s (wrk, 50 conns) | $ours_get | $peer_get | $(bench_ratio "$ours_get" "$peer_get") |"
echo "| manifest HEAD, req/s (headload.py, 50 conns) | $ours_head | $peer_head | $(bench_ratio "$ours_head" "$peer_head") |"
echo "| import of a $((bundle_bytes / 1048576)) MiB bundle, s | $import_s (ferry-appliance import) | $skopeo_s (skopeo copy oci-archive: → registry) | $(bench_ratio "$skopeo_s" "$import_s")x faster |"
echo "| openssl dgst -sha256 of the bundle, s | $openssl_s | | import at $(bench_ratio "$openssl_s" "$import_s") of its speed |"
echo
echo "non-2xx answers: ours GET $ours_get_bad HEAD $ours_head_bad; registry GET $peer_get_bad HEAD $peer_head_bad"
echo "ferry-appliance peak RSS through the run: $((rss_kib / 1024)) MiB"
