#!/usr/bin/env bash
# Benchmark: a pull-through cache, `ferry-appliance serve --proxy` against the distribution registry
# in proxy mode (`proxy: remoteurl:`), in one run, all on 127.0.0.1 over TLS.
#
#   Benchmarks/proxy.sh [LARGE_SIZE]      (default 1G)
#
# Upstream: a distribution registry over TLS (a CA made here), seeded once with bench/large:1
# (LARGE_SIZE of random bytes in LAYERS layers, default 4) and bench/small:1 (SMALL layers of 1 MiB,
# default 100), its access log on: each contender's upstream requests are counted from it.
# Each contender starts with an empty cache and trusts the upstream's CA (ferry-appliance through
# --proxy-ca; the distribution registry, a Go program, through SSL_CERT_FILE); the client is
# `skopeo copy docker://CACHE/NAME:TAG dir:…` (every layer, digests checked, the copy deleted after):
#   the large image cold (cache empty), then warm (cached); the small image cold, then warm; and, with
#   a fresh cache, CLIENTS (default 20) cold pulls of the large image at once.
# Before each count, the script waits until the cache's data and the upstream's log stop changing
# (the distribution registry stores a blob in the background after it answers): that wait is not
# timed. Reported: wall time per case, the ratio, the upstream GETs of the image's layers and all
# upstream requests per case, and each cache's peak RSS (VmHWM, the highest of its server processes).
# A direct pull from the upstream is the reference for what a pull costs without a cache.
#
# FERRY_BENCH_SKIP_FERRY=1 measures the distribution registry only (no Swift build, no
# ferry-appliance): for a checkout whose ferry-appliance does not have --proxy yet.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
large=${1:-1G}
layers=${LAYERS:-4}
small_count=${SMALL:-100}
clients=${CLIENTS:-20}
skip_ferry=${FERRY_BENCH_SKIP_FERRY:-}

if [ -z "$skip_ferry" ]; then
  swift build -c release --product ferry-appliance 2>&1 | tail -1
  bin=$(swift build -c release --show-bin-path)
fi
work=$(mktemp -d -t ferry-bench-proxy-XXXXXX)
upstream_pid=
cache_pid=
client_pids=()
cleanup() {
  stop_registry
  for pid in "${client_pids[@]}" $cache_pid $upstream_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# wait_up URL CA PID LOG: until URL/v2/ answers over TLS with CA (made by the server as it starts).
wait_up() {
  for _ in $(seq 300); do
    [ -f "$2" ] && curl -s --cacert "$2" "$1/v2/" >/dev/null 2>&1 && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  echo "$1 did not start: $(tail -n 5 "$4")" >&2
  return 1
}

stage "upstream: bench/large:1 ($large in $layers layers), bench/small:1 ($small_count layers of 1 MiB)"
start_registry "$work/upstream"
upstream_pid=$REGISTRY_PID
REGISTRY_PID=
upstream=$REGISTRY
upstream_ca=$REGISTRY_CA
upstream_certs=$REGISTRY_CERTS
layer_size=$("$PYTHON" -c '
import sys
text, count = sys.argv[1], int(sys.argv[2])
units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
size = int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)
print(size // count)' "$large" "$layers")
large_spec=$(for _ in $(seq "$layers"); do printf '%s,' "$layer_size"; done)
small_spec=$(for _ in $(seq "$small_count"); do printf '1M,'; done)
python3 scripts/make-images.py --registry "$upstream" --cert-dir "$upstream_certs" \
  "bench/large:1=${large_spec%,}" "bench/small:1=${small_spec%,}" >/dev/null
echo "   upstream holds $(($(du -sb "$work/upstream/data" | cut -f1) / 1048576)) MiB"
# The same upstream again, now with its access log (one line per request, on standard output).
kill "$upstream_pid"
wait "$upstream_pid" 2>/dev/null || true
sed -i 's/disabled: true/disabled: false/' "$work/upstream/registry.yml"
upstream_log=$work/upstream/access.log
docker-registry serve "$work/upstream/registry.yml" >"$upstream_log" 2>&1 &
upstream_pid=$!
wait_up "https://$upstream" "$upstream_ca" "$upstream_pid" "$upstream_log"

# Per image: the digest of its manifest, and its layers' GET request lines as the access log writes them.
declare -A manifest
for image in bench/large:1 bench/small:1; do
  raw=$(skopeo inspect --raw --cert-dir "$upstream_certs" "docker://$upstream/$image")
  manifest[$image]=$(printf '%s' "$raw" | sha256sum | cut -d' ' -f1)
  printf '%s' "$raw" | "$PYTHON" -c '
import json, sys
for layer in json.load(sys.stdin)["layers"]:
    print("\"GET /v2/%s/blobs/%s " % (sys.argv[1], layer["digest"]))' "${image%%:*}" >"$work/${image//[\/:]/-}.gets"
done

# start_peer DIR: the distribution registry as a pull-through cache of the upstream, over TLS with
# a CA of its own (start_registry makes it, and a plain registry that is stopped at once).
start_peer() {
  start_registry "$1"
  kill "$REGISTRY_PID"
  wait "$REGISTRY_PID" 2>/dev/null || true
  REGISTRY_PID=
  printf 'proxy:\n  remoteurl: https://%s\n' "$upstream" >>"$1/registry.yml"
  SSL_CERT_FILE=$upstream_ca docker-registry serve "$1/registry.yml" >"$1/registry.log" 2>&1 &
  cache_pid=$!
  CACHE=$REGISTRY
  CACHE_CERTS=$REGISTRY_CERTS
  CACHE_DATA=$1/data
  CACHE_LOG=$1/registry.log
  wait_up "https://$CACHE" "$REGISTRY_CA" "$cache_pid" "$CACHE_LOG"
}

# start_ferry DIR: ferry-appliance as a pull-through cache of the upstream, anonymous pulls.
start_ferry() {
  mkdir -p "$1"
  local port
  port=$(free_port)
  "$bin/ferry-appliance" serve --data-dir "$1" --listen "127.0.0.1:$port" --anonymous pull --access-log off \
    --no-console --proxy "https://$upstream" --proxy-ca "$upstream_ca" >"$1.log" 2>&1 &
  cache_pid=$!
  CACHE=127.0.0.1:$port
  CACHE_DATA=$1
  CACHE_LOG=$1.log
  wait_up "https://$CACHE" "$1/tls/ca.crt" "$cache_pid" "$CACHE_LOG"
  CACHE_CERTS=$1/certs
  mkdir -p "$CACHE_CERTS"
  cp "$1/tls/ca.crt" "$CACHE_CERTS/ca.crt"
}

# stop_cache WHO: keeps the highest VmHWM of WHO's servers in rss[WHO] (KiB), then stops the server.
declare -A rss
stop_cache() {
  local hwm
  hwm=$(awk '/VmHWM/{print $2}' "/proc/$cache_pid/status")
  [ "$hwm" -le "${rss[$1]:-0}" ] || rss[$1]=$hwm
  kill "$cache_pid"
  wait "$cache_pid" 2>/dev/null || true
  cache_pid=
}

# settle: until neither the cache's data nor the upstream's log has changed for a second (2 min at most).
settle() {
  local before='' after
  for _ in $(seq 120); do
    after="$({ du -sb "$CACHE_DATA" 2>/dev/null || true; } | cut -f1) $(wc -l <"$upstream_log")"
    [ "$after" = "$before" ] && return 0
    before=$after
    sleep 1
  done
}

# pull WHO CASE IMAGE [COUNT]: COUNT (default 1) `skopeo copy`s at once of IMAGE from $CACHE, each
# into a dir: of its own, checked against the upstream's manifest, then deleted. Sets secs[WHO:CASE]
# (wall time), and, once settled, gets[WHO:CASE] (upstream GETs of IMAGE's layers) and
# reqs[WHO:CASE] (all upstream /v2/ requests).
declare -A secs gets reqs
pull() {
  local who=$1 case=$2 image=$3 count=${4:-1} mark t0 i pid failed=0
  mark=$(wc -l <"$upstream_log")
  client_pids=()
  t0=$(bench_now)
  for i in $(seq "$count"); do
    skopeo copy --quiet --src-cert-dir "$CACHE_CERTS" "docker://$CACHE/$image" "dir:$work/pull-$i" \
      >"$work/pull-$i.log" 2>&1 &
    client_pids+=("$!")
  done
  for pid in "${client_pids[@]}"; do wait "$pid" || failed=1; done
  secs[$who:$case]=$(bench_seconds "$t0" "$(bench_now)")
  client_pids=()
  if [ "$failed" = 1 ]; then
    cat "$work"/pull-*.log >&2
    echo "a pull of $image from $who failed; its log: $(tail -n 20 "$CACHE_LOG")" >&2
    exit 1
  fi
  for i in $(seq "$count"); do
    [ "$(sha256sum <"$work/pull-$i/manifest.json" | cut -d' ' -f1)" = "${manifest[$image]}" ] ||
      { echo "$who served another manifest for $image" >&2; exit 1; }
    rm -rf "$work/pull-$i" "$work/pull-$i.log"
  done
  settle
  gets[$who:$case]=$(tail -n +"$((mark + 1))" "$upstream_log" | grep -cF -f "$work/${image//[\/:]/-}.gets" || true)
  reqs[$who:$case]=$(tail -n +"$((mark + 1))" "$upstream_log" | grep -c '"\(GET\|HEAD\) /v2/' || true)
  echo "   $who, $case: ${secs[$who:$case]}s, upstream: ${gets[$who:$case]} layer GETs, ${reqs[$who:$case]} requests"
}

# measure WHO START: the cases above against caches that START makes.
measure() {
  stage "$1"
  "$2" "$work/$1-cache"
  pull "$1" large-cold bench/large:1
  pull "$1" large-warm bench/large:1
  pull "$1" small-cold bench/small:1
  pull "$1" small-warm bench/small:1
  stop_cache "$1"
  rm -rf "$work/$1-cache" "$work/$1-cache.log"
  "$2" "$work/$1-cache"
  pull "$1" concurrent bench/large:1 "$clients"
  stop_cache "$1"
  rm -rf "$work/$1-cache" "$work/$1-cache.log"
}

stage "direct from the upstream (reference)"
CACHE=$upstream
CACHE_CERTS=$upstream_certs
CACHE_DATA=$work/upstream/data
CACHE_LOG=$upstream_log
pull direct large bench/large:1
pull direct small bench/small:1
measure registry start_peer
[ -n "$skip_ferry" ] || measure ferry start_ferry

# cell MAP KEY: the value, or "skipped" for ferry under FERRY_BENCH_SKIP_FERRY.
cell() {
  local -n map=$1
  echo "${map[$2]:-skipped}"
}
# ratio REGISTRY FERRY: REGISTRY / FERRY, empty when either is missing or FERRY is 0.
ratio() {
  case "$2" in skipped | 0 | 0.00) return 0 ;; esac
  echo "$(bench_ratio "$1" "$2")x"
}
row() { # LABEL CASE: time, ratio, upstream layer GETs and requests, ferry then registry
  local f r
  f=$(cell secs "ferry:$2")
  r=$(cell secs "registry:$2")
  echo "| $1 | $f | $r | $(ratio "$r" "$f") | $(cell gets "ferry:$2") / $(cell reqs "ferry:$2") |" \
    "${gets[registry:$2]} / ${reqs[registry:$2]} |"
}
mib() { [ -n "${rss[$1]:-}" ] && echo $((rss[$1] / 1024)) || echo skipped; }
echo
echo "| pull through the cache (skopeo copy) | ferry-appliance, s | distribution registry" \
  "$(docker-registry --version 2>/dev/null | awk '{print $3}'), s | registry / ferry |" \
  "upstream layer GETs / requests, ferry | same, registry |"
echo "|---|---|---|---|---|---|"
row "large ($large in $layers layers), cold" large-cold
row "large, warm" large-warm
row "small ($small_count layers of 1 MiB), cold" small-cold
row "small, warm" small-warm
row "large, $clients clients at once, cold" concurrent
echo "| peak RSS of the cache, MiB | $(mib ferry) | $(mib registry) | | | |"
echo
echo "Direct from the upstream, no cache: large ${secs[direct:large]}s (${gets[direct:large]} layer GETs)," \
  "small ${secs[direct:small]}s (${gets[direct:small]} layer GETs)."
