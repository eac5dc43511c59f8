#!/usr/bin/env bash
# Sets everything up and runs Ferry's main job on embedded defaults, offline:
#   installs the Debian packages (the Swift toolchain's prerequisites, the C libraries, the
#   registry, skopeo, python3: as root; anyone else gets the one apt-get line to run), builds the
#   release binaries once (.build-static/release, the build install.sh then installs), starts a
#   local distribution registry with TLS on 127.0.0.1:5001, pushes a few demo images to it (one
#   multi-platform, shared layers), and exports them into bundles/demo.bundle.tar, which skopeo
#   then reads back. The images keep stable names: 127.0.0.1:5001/demo/web:1.0, ... (served by the
#   appliance as 127.0.0.1_5001/demo/web:1.0, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# The port is part of the demo images' names; QUICKSTART_REGISTRY_PORT changes both.
registry_port=${QUICKSTART_REGISTRY_PORT:-5001}

stage "checking Debian packages"
ensure_packages "${SWIFT_TOOLCHAIN_PACKAGES[@]}" "${FERRY_BUILD_PACKAGES[@]}" "${FERRY_QUICKSTART_PACKAGES[@]}"
require_swift
if ! port_is_free "$registry_port"; then
  echo "127.0.0.1:$registry_port is in use: the quickstart's registry needs it (the demo images are named" >&2
  echo "after it); stop what listens there, or set QUICKSTART_REGISTRY_PORT to another port" >&2
  exit 1
fi

stage "building ferry and ferry-appliance (release, Swift runtime linked in; the first build takes minutes)"
build_ferry .
ferry=.build-static/release/ferry
stage "built $ferry"

work=$(mktemp -d -t ferry-quickstart-XXXXXX)
trap 'stop_registry; rm -rf "$work"' EXIT
stage "starting a local registry on 127.0.0.1:$registry_port"
start_registry "$work/registry" "$registry_port"
echo "   https://$REGISTRY (CA $REGISTRY_CA)"

stage "pushing demo images"
"$PYTHON" scripts/make-images.py --registry "$REGISTRY" --cert-dir "$REGISTRY_CERTS" \
  demo/web:1.0=base:8M,2M@linux/amd64+linux/arm64/v8 demo/tools:2.1=base:8M,1M demo/batch:3=16M \
  >"$work/images.txt"

stage "ferry export"
mkdir -p bundles
"$ferry" export -f "$work/images.txt" -o bundles/demo.bundle.tar --ca-file "$REGISTRY_CA" \
  --cache "$work/cache"

stage "reading the bundle back with skopeo"
while read -r reference; do
  printf '   %s  ' "$reference"
  skopeo inspect --raw "oci-archive:bundles/demo.bundle.tar:$reference" | sha256sum | cut -c1-19
done <"$work/images.txt"
stage "done: bundles/demo.bundle.tar; ./install.sh imports it and the appliance serves its images as:"
sed 's|^\([^/]*\):\([0-9]*\)/|   \1_\2/|' "$work/images.txt"
