#!/usr/bin/env bash
# Sets everything up and runs Ferry's main job on embedded defaults, offline:
#   installs the Debian packages, builds ferry (release), starts a local distribution registry with
#   TLS on 127.0.0.1, pushes a few demo images to it (one multi-platform, shared layers), and exports
#   them into bundles/demo.bundle.tar, which skopeo then reads back.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

echo "== installing packages"
install_packages
echo "== building ferry (release)"
swift build -c release --product ferry 2>&1 | tail -1
ferry=$(swift build -c release --show-bin-path)/ferry

work=$(mktemp -d -t ferry-quickstart-XXXXXX)
trap 'stop_registry; rm -rf "$work"' EXIT
echo "== starting a local registry"
start_registry "$work/registry"
echo "   https://$REGISTRY (CA $REGISTRY_CA)"

echo "== pushing demo images"
python3 scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" \
  demo/web:1.0=base:8M,2M@linux/amd64+linux/arm64/v8 demo/tools:2.1=base:8M,1M demo/batch:3=16M \
  >"$work/images.txt"

echo "== ferry export"
mkdir -p bundles
"$ferry" export -f "$work/images.txt" -o bundles/demo.bundle.tar --ca-file "$REGISTRY_CA" \
  --cache "$work/cache"

echo "== reading the bundle back with skopeo"
while read -r reference; do
  printf '   %s  ' "$reference"
  skopeo inspect --raw "oci-archive:bundles/demo.bundle.tar:$reference" | sha256sum | cut -c1-19
done <"$work/images.txt"
echo "Done: bundles/demo.bundle.tar"
