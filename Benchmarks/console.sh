#!/usr/bin/env bash
# Benchmark: importing a bundle through the web console's upload vs `ferry-appliance import` of
# the same file, in one run, each into an empty site. The upload is streamed through the importer
# as it arrives (never held in memory, never written to disk first): its time should be close to
# the command's, and serve's peak RSS flat whatever the bundle's size. Also: page times with many
# repositories (the overview, the first and a later page of the repository list, a search).
#
#   Benchmarks/console.sh [LAYER_SIZE] [REPOSITORIES]      (defaults 1G, 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
layer=${1:-1G}
repositories=${2:-10000}

build_ferry . | tail -n 1 # the release build install.sh ships
bin=.build-static/release
work=$(mktemp -d -t ferry-bench-console-XXXXXX)
serve_pid=
stop_serve() { if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi; serve_pid=; }
trap 'stop_serve; stop_registry; rm -rf "$work"' EXIT

start_registry "$work/registry"
"$PYTHON" scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" "bench/upload:1=$layer" \
  >"$work/images.txt"
"$bin/ferry" export -f "$work/images.txt" -o "$work/bundle.tar" --ca-file "$REGISTRY_CA" --cache "$work/cache" \
  --progress none >/dev/null
stop_registry
size_mib=$(($(stat -c %s "$work/bundle.tar") / 1048576))

t0=$(bench_now)
"$bin/ferry-appliance" import "$work/bundle.tar" --data-dir "$work/site-cli" >/dev/null
cli=$(bench_seconds "$t0" "$(bench_now)")

# serve on a site of its own, an admin signed in with curl (session cookie and CSRF token).
site="$work/site-web"
printf '%s' admin-password | "$bin/ferry-appliance" user add admin --password-stdin --role admin --data-dir "$site" >/dev/null
port=$(free_port)
"$bin/ferry-appliance" serve --data-dir "$site" --listen "127.0.0.1:$port" --anonymous none --access-log off \
  2>"$work/serve.log" &
serve_pid=$!
url="https://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -s -o /dev/null --cacert "$site/tls/ca.crt" "$url/v2/" 2>/dev/null && break; sleep 0.1; done
ca=(--cacert "$site/tls/ca.crt")
csrf() { grep -o 'name="csrf" value="[0-9a-f]*"' | head -n 1 | sed 's/.*value="//; s/"//'; }
token=$(curl -s "${ca[@]}" -c "$work/jar" -b "$work/jar" "$url/ui/login" | csrf)
curl -s "${ca[@]}" -c "$work/jar" -b "$work/jar" -o /dev/null \
  --data-urlencode "csrf=$token" --data-urlencode "user=admin" --data-urlencode "password=admin-password" "$url/ui/login"
token=$(curl -s "${ca[@]}" -b "$work/jar" "$url/ui/import" | csrf)
rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$serve_pid/status")
t0=$(bench_now)
status=$(curl -s "${ca[@]}" -b "$work/jar" -o "$work/result.html" -w '%{http_code}' -F "csrf=$token" \
  -F "bundle=@$work/bundle.tar" "$url/ui/import")
web=$(bench_seconds "$t0" "$(bench_now)")
peak=$(awk '/VmHWM/ {print $2}' "/proc/$serve_pid/status")
[ "$status" = 200 ] || { echo "upload answered $status:"; cat "$work/result.html"; exit 1; }

# The wire: the same bytes pushed as one blob through the registry API (TLS, Basic credentials,
# hashed and written once), on the same server.
digest=$(sha256sum "$work/bundle.tar" | cut -d ' ' -f 1)
location=$(curl -s "${ca[@]}" -u admin:admin-password -o /dev/null -w '%header{location}' -X POST \
  "$url/v2/bench/raw/blobs/uploads/")
case "$location" in http*) ;; *) location="$url$location" ;; esac
case "$location" in *\?*) separator='&' ;; *) separator='?' ;; esac
t0=$(bench_now)
blob_status=$(curl -s "${ca[@]}" -u admin:admin-password -o /dev/null -w '%{http_code}' \
  -H 'Content-Type: application/octet-stream' -T "$work/bundle.tar" "$location${separator}digest=sha256:$digest")
wire=$(bench_seconds "$t0" "$(bench_now)")
[ "$blob_status" = 201 ] || { echo "blob upload answered $blob_status"; exit 1; }

echo "bundle: $size_mib MiB (one ${layer} layer)"
printf '%-34s %-10s\n' import seconds
printf '%-34s %-10s\n' "ferry-appliance import FILE" "$cli"
printf '%-34s %-10s\n' "console upload (curl -F)" "$web ($(bench_ratio "$web" "$cli"))"
printf '%-34s %-10s\n' "blob push, same bytes (the wire)" "$wire (upload/wire $(bench_ratio "$web" "$wire"))"
echo "serve RSS: $((rss_before / 1024)) MiB before the upload, peak $((peak / 1024)) MiB"

# Pages at scale: many repositories of one small image each, seeded as pushes would have stored them.
stop_serve
"$PYTHON" Benchmarks/scale.py seed-appliance "$site" "$repositories" 1 >/dev/null
"$bin/ferry-appliance" serve --data-dir "$site" --listen "127.0.0.1:$port" --anonymous none --access-log off \
  2>>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "${ca[@]}" "$url/v2/" 2>/dev/null && break; sleep 0.1; done
token=$(curl -s "${ca[@]}" -c "$work/jar2" -b "$work/jar2" "$url/ui/login" | csrf)
curl -s "${ca[@]}" -c "$work/jar2" -b "$work/jar2" -o /dev/null \
  --data-urlencode "csrf=$token" --data-urlencode "user=admin" --data-urlencode "password=admin-password" "$url/ui/login"
count=$(curl -s "${ca[@]}" -b "$work/jar2" "$url/ui/" | grep -o 'id="repositories">[0-9]*' | grep -o '[0-9]*$')
echo "pages with $count repositories (median of 20 requests, seconds):"
page() {
  for _ in $(seq 1 20); do
    curl -s "${ca[@]}" -b "$work/jar2" -o /dev/null -w '%{time_total}\n' "$url$1"
  done | sort -n | sed -n 10p
}
printf '  %-40s %s\n' "/ui/ (overview)" "$(page /ui/)"
printf '  %-40s %s\n' "/ui/repositories (first page)" "$(page /ui/repositories)"
printf '  %-40s %s\n' "/ui/repositories?after=… (a late page)" "$(page "/ui/repositories?after=bench.local%2Fscale%2Fr09000")"
printf '  %-40s %s\n' "/ui/repositories?q=r099 (search)" "$(page "/ui/repositories?q=r099")"
printf '  %-40s %s\n' "/ui/repositories?q=nothing (no match)" "$(page "/ui/repositories?q=nothing-matches")"
