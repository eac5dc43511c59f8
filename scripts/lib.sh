#!/usr/bin/env bash
# Shared by scripts/quickstart.sh and Benchmarks/*.sh: packages, ports, a local registry with TLS.
# shellcheck disable=SC2034 # REGISTRY* are set here for the scripts that source this file

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq --no-install-recommends \
    libarchive-dev libssl-dev zlib1g-dev docker-registry skopeo containerd apache2-utils time openssl tar curl \
    ca-certificates >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_registry DIR: a distribution registry on 127.0.0.1 with TLS from a CA made here.
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
  local port
  port=$(free_port)
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
