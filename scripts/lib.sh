#!/usr/bin/env bash
# Shared by scripts/quickstart.sh, install.sh (from a checkout), .ci/run, scripts/fresh-machine-trial.sh
# and Benchmarks/*.sh: Debian package lists, progress lines, the build, a local registry with TLS.
# shellcheck disable=SC2034 # the lists and REGISTRY* are set here for the scripts that source this file

# swift.org's prerequisites of the Swift toolchain on Debian 12: without them `swift` does not start.
SWIFT_TOOLCHAIN_PACKAGES=(
  binutils git gnupg2 libc6-dev libcurl4-openssl-dev libedit2 libgcc-12-dev libpython3-dev libsqlite3-0
  libstdc++-12-dev libxml2-dev libncurses-dev libz3-dev pkg-config python3-lldb-13 tzdata unzip zlib1g-dev
)
# The C libraries Ferry links: libarchive, OpenSSL's libcrypto, libxcrypt, SQLite, zlib; the TLS roots.
FERRY_BUILD_PACKAGES=(libarchive-dev libssl-dev libcrypt-dev libsqlite3-dev zlib1g-dev ca-certificates)
# What the quickstart and install.sh run besides ferry: Debian's python3 (scripts/make-images.py),
# the distribution registry, skopeo, openssl, curl.
FERRY_QUICKSTART_PACKAGES=(python3 docker-registry skopeo openssl curl tar)
# What the tests run: Debian's python3 with python3-cryptography (the token server fixture), the real
# peers (distribution registry, skopeo, podman, containerd), htpasswd (apache2-utils), GNU time (peak
# RSS), openssl, curl, tar, zstd (Hauler- and Zarf-shaped test archives), the shell scripts' linter, and
# chromium with its WebDriver, Debian's selenium and HTML Tidy (the web console's browser tests), slapd and
# ldap-utils (directory sign-in).
FERRY_TEST_PACKAGES=(
  python3 python3-cryptography docker-registry skopeo podman containerd apache2-utils time openssl tar
  curl shellcheck zstd chromium chromium-driver python3-selenium tidy slapd ldap-utils
)
# Debian's python3 (with Debian's python3-* modules), whatever python3 comes first on PATH.
PYTHON=/usr/bin/python3

# Timing for the benchmarks: now, seconds between two of them, and A / B, each to two decimals.
bench_now() { date +%s.%N; }
bench_seconds() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$@"; }
bench_ratio() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$@"; }
# The best of several runs: the least time (bench_min) or the greatest rate (bench_max, divided by
# BENCH_SCALE when set: 1e6 turns bytes/s into MB/s, printed whole).
bench_min() { "$PYTHON" -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }
bench_max() {
  "$PYTHON" -c "import os, sys; s = float(os.environ.get('BENCH_SCALE', 1)); best = max(float(x) for x in sys.argv[1:]) / s
print(f'{best:.0f}' if s != 1 else best)" "$@"
}

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# stage TEXT: one progress line with the time since the script started.
stage() { printf '== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# ensure_packages PACKAGE...: installs the Debian packages that are missing (apt-get, as root); a
# user other than root gets the one apt-get line to run instead, and the script stops there.
ensure_packages() {
  if ! command -v dpkg-query >/dev/null; then
    echo "warning: not a Debian system (no dpkg-query): make sure these are installed: $*" >&2
    return 0
  fi
  local missing=() package
  for package in "$@"; do
    case " ${missing[*]-} " in *" $package "*) continue ;; esac
    dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q '^install ok installed$' ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages. Install them, then run this again:" >&2
    echo >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  stage "installing ${#missing[@]} Debian packages: ${missing[*]}"
  local log
  log=$(mktemp -t ferry-apt-XXXXXX.log)
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "apt-get failed (whole log: $log)" >&2
    exit 1
  fi
  rm -f "$log"
  stage "installed the Debian packages"
}

# require_swift: stops with a clear message when the Swift toolchain is not on PATH or does not start.
require_swift() {
  if ! command -v swift >/dev/null; then
    echo "swift is not on PATH: install the Swift 6 toolchain from swift.org (e.g. in /opt/swift) and" >&2
    echo "  export PATH=/opt/swift/usr/bin:\$PATH" >&2
    exit 1
  fi
  local out
  if ! out=$(swift --version 2>&1); then
    echo "$(command -v swift) does not start:" >&2
    echo "$out" | tail -n 5 >&2
    echo "swift.org's Debian 12 prerequisites: ${SWIFT_TOOLCHAIN_PACKAGES[*]}" >&2
    exit 1
  fi
}

# build_ferry CHECKOUT: the release build that install.sh installs and packages and the quickstart
# runs: the Swift runtime and Foundation linked in (--static-swift-stdlib), other libraries found
# next to the binary ($ORIGIN/../lib/ferry) or on the system. Built once into
# CHECKOUT/.build-static/release; a second call with nothing changed compiles nothing. The
# compiler's own progress lines are shown.
build_ferry() {
  # shellcheck disable=SC2016 # $ORIGIN is for the linker, not the shell
  (cd "$1" && swift build -c release --static-swift-stdlib --scratch-path .build-static \
    -Xlinker -rpath -Xlinker '$ORIGIN/../lib/ferry')
}

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# port_is_free PORT: nothing listens on 127.0.0.1:PORT.
port_is_free() {
  "$PYTHON" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

# start_registry DIR [PORT]: a distribution registry on 127.0.0.1 (PORT, else a free port) with TLS
# from a CA made here.
# Sets REGISTRY (host:port), REGISTRY_CA (CA file), REGISTRY_CERTS (a skopeo --cert-dir), REGISTRY_PID.
start_registry() {
  local dir=$1
  mkdir -p "$dir/tls" "$dir/certs"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/tls/ca.key" \
    -out "$dir/tls/ca.crt" -days 2 -subj "/CN=Ferry local CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/tls/server.key" \
    -out "$dir/tls/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$dir/tls/san.ext"
  openssl x509 -req -in "$dir/tls/server.csr" -CA "$dir/tls/ca.crt" -CAkey "$dir/tls/ca.key" \
    -CAcreateserial -out "$dir/tls/server.crt" -days 2 -extfile "$dir/tls/san.ext" 2>/dev/null
  cp "$dir/tls/ca.crt" "$dir/certs/ca.crt"
  local port=${2:-}
  [ -n "$port" ] || port=$(free_port)
  cat >"$dir/registry.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
  tls:
    certificate: $dir/tls/server.crt
    key: $dir/tls/server.key
YAML
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  REGISTRY_PID=$!
  REGISTRY="127.0.0.1:$port"
  REGISTRY_CA="$dir/tls/ca.crt"
  REGISTRY_CERTS="$dir/certs"
  for _ in $(seq 100); do
    curl -s --cacert "$REGISTRY_CA" "https://$REGISTRY/v2/" >/dev/null && return 0
    kill -0 "$REGISTRY_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "registry did not start: $(cat "$dir/registry.log")" >&2
  return 1
}

stop_registry() {
  if [ -n "${REGISTRY_PID:-}" ]; then
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
  fi
}
