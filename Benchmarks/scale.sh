#!/usr/bin/env bash
# Benchmark: does the appliance's cost stay flat as its store grows? Side by side with the
# distribution registry in one run, both over TLS on 127.0.0.1, Basic credentials on every request
# (htpasswd/bcrypt for the registry, a bcrypt user for the appliance), the same client.
#
#   Benchmarks/scale.sh [REPOS] [PER_REPO]      (default 10000 x 10 = 100,000 manifests)
#
# Repositories are named bench.local/scale/rNNNNN, as the appliance stores images (source registry
# first), so no request is read through the mirror mapping.
# (1) One store of each server is seeded with REPOS x PER_REPO small manifests (Benchmarks/scale.py
#     writes what each server writes for a push, so the end state needs no hour of pushing).
# (2) Seconds per 100 manifest PUTs into a small store (the start) and into the seeded one (the
#     end), both served at once: ROUNDS (default 3) rounds of 500 PUTs into each, the order
#     swapped every round, so the machine's drift over the run weighs on both alike (measured
#     one after the other, minutes apart, the ratio moved by 0.3 with the hour). Ratio end/start:
#     goal <= 1.2.
# (3) Manifest GET by tag, wrk 50 connections for DURATION s, while PUTs run: req/s and p99.
# (4) Blob GET rate (wrk, 50 connections) with and without `ferry-appliance gc` running beside it.
# (5) Import of a bundle of IMPORT images (default 5000, exported by ferry from the seeded
#     registry), `gc`, and `check`, with the store at scale; the appliance's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
repos=${1:-10000}
per_repo=${2:-10}
duration=${DURATION:-10}
import_count=${IMPORT:-5000}
pushes=${PUSHES:-500}
rounds=${ROUNDS:-3}
command -v wrk >/dev/null || sudo_if_needed apt-get install -y -qq --no-install-recommends wrk >/dev/null
command -v htpasswd >/dev/null || sudo_if_needed apt-get install -y -qq --no-install-recommends apache2-utils >/dev/null

build_ferry . | tail -n 1 # the release build install.sh ships
bin=.build-static/release
work=$(mktemp -d -t ferry-bench-scale-XXXXXX)
appliance_pid=
peer_pid=
small_pid=
peer_small_pid=
cleanup() {
  for pid in $appliance_pid $peer_pid $small_pid $peer_small_pid ${REGISTRY_PID:-}; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
# mean of the whitespace-separated numbers in one argument
mean() { "$PYTHON" -c "import sys; v=[float(x) for x in sys.argv[1].split()]; print(f'{sum(v)/len(v):.3f}')" "$1"; }
password=bench-password-1
# serve_appliance DATA ADDRESS / serve_registry CONFIG: start one in the background (its pid in
# $started); wait_https ADDRESS: until it answers.
serve_appliance() {
  "$bin/ferry-appliance" serve --data-dir "$1" --listen "$2" --access-log off >>"$work/serve.log" 2>&1 &
  started=$!
}
serve_registry() {
  docker-registry serve "$1" >>"$work/peer/registry.log" 2>&1 &
  started=$!
}
wait_https() { for _ in $(seq 100); do curl -s -o /dev/null -k "https://$1/v2/" && return; sleep 0.1; done; }

# The distribution registry with htpasswd auth, on the storage in $work/peer/data.
peer_port=$(free_port)
start_registry "$work/peer" "$peer_port"
stop_registry
htpasswd -Bbn bench "$password" >"$work/peer/htpasswd"
cat >>"$work/peer/registry.yml" <<YAML
auth:
  htpasswd:
    realm: bench
    path: $work/peer/htpasswd
YAML
start_peer() {
  serve_registry "$work/peer/registry.yml"
  peer_pid=$started
  wait_https "127.0.0.1:$peer_port"
}
stop_peer() { kill "$peer_pid"; wait "$peer_pid" 2>/dev/null || true; peer_pid=; }
peer="127.0.0.1:$peer_port"
peer_ca="$work/peer/tls/ca.crt"

# The appliance with one admin user.
data="$work/appliance"
ours_port=$(free_port)
echo "$password" | "$bin/ferry-appliance" user add bench --password-stdin --role admin --data-dir "$data" >/dev/null
start_ours() {
  serve_appliance "$data" "127.0.0.1:$ours_port"
  appliance_pid=$started
  wait_https "127.0.0.1:$ours_port"
}
stop_ours() { kill "$appliance_pid"; wait "$appliance_pid" 2>/dev/null || true; }
ours="127.0.0.1:$ours_port"
ours_ca="$data/tls/ca.crt"

push() { "$PYTHON" Benchmarks/scale.py push "$1" "$2" bench "$password" "$pushes" "$3"; }

# The start: an appliance and a registry on stores that stay small (the PUTs of (2) only).
small="$work/appliance-small"
small_port=$(free_port)
echo "$password" | "$bin/ferry-appliance" user add bench --password-stdin --role admin --data-dir "$small" >/dev/null
ours_small="127.0.0.1:$small_port"
peer_small_port=$(free_port)
peer_small="127.0.0.1:$peer_small_port"
sed -e "s#$work/peer/data#$work/peer-small/data#" -e "s#127.0.0.1:$peer_port#$peer_small#" \
  "$work/peer/registry.yml" >"$work/peer/small.yml"
start_small() {
  serve_appliance "$small" "$ours_small"
  small_pid=$started
  serve_registry "$work/peer/small.yml"
  peer_small_pid=$started
  wait_https "$ours_small"
  wait_https "$peer_small"
}

echo "== (1) seeding one store of each with $repos x $per_repo manifests"
start_ours # the appliance makes its database, for the seeding to fill
stop_ours
start=$(date +%s.%N)
"$PYTHON" Benchmarks/scale.py seed-appliance "$data" "$repos" "$per_repo"
echo "   appliance seeded in $(bench_seconds "$start" "$(date +%s.%N)") s, registry.db $(($(stat -c %s "$data/registry.db") / 1048576)) MiB"
start=$(date +%s.%N)
"$PYTHON" Benchmarks/scale.py seed-registry "$work/peer/data" "$repos" "$per_repo"
echo "   registry seeded in $(bench_seconds "$start" "$(date +%s.%N)") s"
sync # the seeding's dirty pages are written back now, not during the measurement

echo "== (2) $pushes PUTs at a time into a small and the seeded store of each, $rounds rounds"
start_ours
start_peer
start_small
# One warm-up round each (connections, caches), not counted.
for target in "$ours $ours_ca" "$peer $peer_ca" "$ours_small $small/tls/ca.crt" "$peer_small $peer_ca"; do
  read -r address ca <<<"$target"
  push "$address" "$ca" w >/dev/null
done
ours_starts='' ours_ends='' peer_starts='' peer_ends=''
for round in $(seq "$rounds"); do
  order="small seeded"
  [ $((round % 2)) -eq 0 ] && order="seeded small"
  for store in $order; do
    if [ "$store" = small ]; then
      ours_starts+=" $(push "$ours_small" "$small/tls/ca.crt" "s$round")"
      peer_starts+=" $(push "$peer_small" "$peer_ca" "s$round")"
    else
      ours_ends+=" $(push "$ours" "$ours_ca" "e$round")"
      peer_ends+=" $(push "$peer" "$peer_ca" "e$round")"
    fi
  done
done
kill "$small_pid" "$peer_small_pid"
wait "$small_pid" "$peer_small_pid" 2>/dev/null || true
small_pid='' peer_small_pid=''
ours_start=$(mean "$ours_starts") ours_end=$(mean "$ours_ends")
peer_start=$(mean "$peer_starts") peer_end=$(mean "$peer_ends")
echo "   appliance s/100, small: $ours_starts"
echo "   appliance s/100, seeded:$ours_ends"
echo "   registry s/100, small:  $peer_starts"
echo "   registry s/100, seeded: $peer_ends"

echo "== (3) manifest GET under load (wrk -c50 -d${duration}s) while PUTs run"
auth="Authorization: Basic $(printf 'bench:%s' "$password" | base64)"
accept="Accept: application/vnd.oci.image.manifest.v1+json"
get_load() { # URL: "req/s p99"
  wrk -c50 -t2 "-d${duration}s" --latency -H "$auth" -H "$accept" "$1" |
    awk '/Requests\/sec/{rate=$2} / 99%/{p99=$2} END{printf "%.0f %s\n", rate, p99}'
}
PUSHES=2000 push "$ours" "$ours_ca" g >/dev/null &
pusher=$!
read -r ours_get ours_p99 < <(get_load "https://$ours/v2/bench.local/scale/r00005/manifests/t3")
wait "$pusher" || true
PUSHES=200 push "$peer" "$peer_ca" g >/dev/null &
pusher=$!
read -r peer_get peer_p99 < <(get_load "https://$peer/v2/bench.local/scale/r00005/manifests/t3")
wait "$pusher" || true

echo "== (4) blob GET with and without gc running"
layer=$("$PYTHON" -c 'import hashlib; print("sha256:" + hashlib.sha256(b"ferry scale benchmark layer\n").hexdigest())')
blob_load() { wrk -c50 -t2 "-d${duration}s" -H "$auth" "$1" | awk '/Requests\/sec/{printf "%.0f\n", $2}'; }
blob_idle=$(blob_load "https://$ours/v2/bench.local/scale/r00005/blobs/$layer")
(while true; do "$bin/ferry-appliance" gc --grace-period 0 --data-dir "$data" >/dev/null; done) &
gc_loop=$!
blob_gc=$(blob_load "https://$ours/v2/bench.local/scale/r00005/blobs/$layer")
kill "$gc_loop"
wait "$gc_loop" 2>/dev/null || true

echo "== (5) import of $import_count images, gc and check at scale"
stop_peer
# The seeded storage, served without auth, is the export's source.
sed '/^auth:/,$d' "$work/peer/registry.yml" >"$work/peer/open.yml"
serve_registry "$work/peer/open.yml"
peer_pid=$started
wait_https "$peer"
# IMPORT images over the first 500 repositories (fewer when the store holds fewer images).
import_repos=$((repos < 500 ? repos : 500))
per_import=$((import_count / import_repos))
per_import=$((per_import < per_repo ? per_import : per_repo))
import_count=$((import_repos * per_import))
"$PYTHON" Benchmarks/scale.py refs "$peer" "$import_repos" "$per_import" >"$work/images.txt"
start=$(date +%s.%N)
"$bin/ferry" export -f "$work/images.txt" -o "$work/import.tar" --ca-file "$peer_ca" --progress none >/dev/null
export_s=$(bench_seconds "$start" "$(date +%s.%N)")
start=$(date +%s.%N)
"$bin/ferry-appliance" import "$work/import.tar" --data-dir "$data" >/dev/null
import_s=$(bench_seconds "$start" "$(date +%s.%N)")
start=$(date +%s.%N)
"$bin/ferry-appliance" gc --data-dir "$data" >/dev/null
gc_s=$(bench_seconds "$start" "$(date +%s.%N)")
start=$(date +%s.%N)
"$bin/ferry-appliance" check --data-dir "$data" >/dev/null
check_s=$(bench_seconds "$start" "$(date +%s.%N)")
rss_kib=$(awk '/VmHWM/{print $2}' "/proc/$appliance_pid/status")

manifests=$((repos * per_repo))
echo
echo "| measure ($manifests manifests in $repos repositories) | ferry-appliance | distribution registry $(docker-registry --version 2>/dev/null | awk '{print $3}') |"
echo "|---|---|---|"
echo "| s per 100 manifest PUTs, small store (at most $((pushes * (rounds + 1))) manifests) | $ours_start | $peer_start |"
echo "| s per 100 manifest PUTs, at scale | $ours_end | $peer_end |"
echo "| end / start (goal <= 1.2) | $(bench_ratio "$ours_end" "$ours_start") | $(bench_ratio "$peer_end" "$peer_start") |"
echo "| manifest GET req/s, 50 conns, PUTs running | $ours_get | $peer_get |"
echo "| manifest GET p99 | $ours_p99 | $peer_p99 |"
echo "| blob GET req/s (small blob, 50 conns), idle / gc running | $blob_idle / $blob_gc | |"
echo "| export of $import_count images from the registry (ferry export), s | $export_s | |"
echo "| import of that bundle into the store at scale, s | $import_s | |"
echo "| gc at scale, s | $gc_s | |"
echo "| check at scale (re-hash every blob), s | $check_s | |"
echo "| appliance peak RSS through the run | $((rss_kib / 1024)) MiB | |"
