#!/usr/bin/env bash
# Ferry's installer: seeds an isolated host with the appliance, the way Harbor's offline installer
# does, and makes the offline installer itself.
#
#   ./install.sh [options]        install (or upgrade) and start the appliance, import bundles/*.tar
#   ./install.sh package          write dist/ferry-offline-installer-VERSION-linux-ARCH.tar.gz
#   ./install.sh --uninstall [--purge]
#
# From a source checkout it installs the Debian packages it needs (as root; anyone else gets the one
# apt-get line to run) and builds release binaries with the Swift runtime linked in, the same build
# scripts/quickstart.sh makes (so after the quickstart nothing is compiled again). From the offline
# tarball it uses the binaries and libraries it carries and needs no network and no Swift toolchain.
# It ends with a short summary: URLs, the admin password (first install only), the CA file, the
# command that prints each client's configuration, and pull commands for an imported image.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local
root=
data_dir=/var/lib/ferry
port=5000
sans=()
start=1
assume_yes=0
action=install
purge=0

usage() {
  cat <<'EOF'
Usage: ./install.sh [package | --uninstall [--purge]] [options]

Install (or upgrade) the Ferry appliance: binaries, /etc/ferry/appliance.yml, a data directory
with its own CA and server certificate, an admin user (password printed once), a systemd service
where systemd runs (else a background process), then import every bundle in bundles/ and end with
a summary: URLs, admin password (first install only), CA file, the command that prints each
client's configuration (all of it is saved in /etc/ferry/clients.txt), and ready-to-paste pull
commands. A second run upgrades the binaries and keeps data, certificates and users.

Options:
  --prefix DIR     where bin/ and lib/ferry/ go (default /usr/local)
  --root DIR       install under DIR as if it were / (for tests and image building; no system
                   user, no systemd: the appliance runs as a background process)
  --data-dir DIR   the appliance's data (default /var/lib/ferry)
  --port N         HTTPS port (default 5000)
  --san NAME       another name or address for the server certificate (repeatable)
  --no-start       install and import, but do not start the appliance
  --yes            do not ask (asks only on a terminal)
  --uninstall      stop and remove what was installed; keeps data and /etc/ferry unless --purge
  --purge          with --uninstall: remove the data directory and /etc/ferry too
  package          build the offline installer tarball into dist/
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    package) action=package ;;
    --prefix) prefix=$2; shift ;;
    --root) root=${2%/}; shift ;;
    --data-dir) data_dir=$2; shift ;;
    --port) port=$2; shift ;;
    --san) sans+=("$2"); shift ;;
    --no-start) start=0 ;;
    --yes|-y) assume_yes=1 ;;
    --uninstall) action=uninstall ;;
    --purge) purge=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
  shift
done
case "$port" in ''|*[!0-9]*) echo "install.sh: --port $port: expected a number" >&2; exit 64 ;; esac

bin_dir="$root$prefix/bin"
lib_dir="$root$prefix/lib/ferry"
etc_dir="$root/etc/ferry"
config="$etc_dir/appliance.yml"
data="$root$data_dir"
unit="$root/etc/systemd/system/ferry-appliance.service"
pid_file="$data/ferry-appliance.pid"

say() { printf '== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# Runs "$@" in the background holding no descriptor of ours beyond stdio (a caller that waits for
# its own pipes or sockets to close would otherwise wait for the appliance too).
detach() {
  (
    for fd in /proc/self/fd/*; do
      n=${fd##*/}
      case "$n" in 0|1|2) ;; *) eval "exec $n>&-" 2>/dev/null || true ;; esac
    done
    exec "$@"
  ) &
}

uses_systemd() { [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

confirm() {
  [ "$assume_yes" -eq 1 ] && return 0
  [ -t 0 ] || return 0
  printf '%s [y/N] ' "$1"
  read -r answer
  case "$answer" in y|Y|yes) return 0 ;; *) echo "install.sh: stopped"; exit 1 ;; esac
}

version() {
  sed -n 's/.*string = "\([^"]*\)".*/\1/p' "$here/Sources/OCICore/FerryVersion.swift" 2>/dev/null | head -1
}

# The static build (from a checkout; scripts/lib.sh has the package lists and the build command):
# the Swift runtime and Foundation linked in; other libraries found next to the binary
# ($ORIGIN/../lib/ferry) or on the system. After scripts/quickstart.sh it is up to date already.
build_release() {
  # shellcheck source=scripts/lib.sh
  . "$here/scripts/lib.sh"
  say "checking Debian packages (the Swift toolchain's prerequisites, the C libraries)"
  ensure_packages "${SWIFT_TOOLCHAIN_PACKAGES[@]}" "${FERRY_BUILD_PACKAGES[@]}" curl openssl
  require_swift
  say "building release binaries in .build-static/release (Swift runtime linked in; compiles only what changed)"
  build_ferry "$here"
  built="$here/.build-static/release"
}

# Shared libraries a binary needs beyond the C library (copied into the offline installer).
extra_libraries() {
  ldd "$1" | awk '/=> \// { print $3 }' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libutil.so.*|ld-linux*) ;;
      *) echo "$lib" ;;
    esac
  done
}

package() {
  build_release
  local v arch name stage
  v=$(version)
  arch=$(uname -m)
  name="ferry-offline-installer-${v:-dev}-linux-$arch"
  stage="$here/dist/$name"
  rm -rf "$stage"
  mkdir -p "$stage/bin" "$stage/lib/ferry" "$stage/bundles" "$stage/share/doc/ferry"
  install -m 0755 "$built/ferry" "$built/ferry-appliance" "$stage/bin/"
  for binary in "$stage/bin/ferry" "$stage/bin/ferry-appliance"; do
    extra_libraries "$binary"
  done | sort -u | while read -r lib; do cp -L "$lib" "$stage/lib/ferry/"; done
  install -m 0755 "$here/install.sh" "$stage/install.sh"
  cp -r "$here/appliance" "$stage/appliance"
  cp "$here/README.md" "$stage/share/doc/ferry/README.md"
  for bundle in "$here"/bundles/*.tar; do
    [ -e "$bundle" ] && cp "$bundle" "$stage/bundles/"
  done
  tar -C "$here/dist" -czf "$here/dist/$name.tar.gz" "$name"
  rm -rf "$stage"
  say "wrote dist/$name.tar.gz"
  echo "   libraries shipped: $(tar -tzf "$here/dist/$name.tar.gz" | sed -n 's|.*/lib/ferry/\(.\+\)|\1|p' | tr '\n' ' ')"
}

stop_running() {
  if uses_systemd && [ -f "$unit" ]; then
    as_root systemctl stop ferry-appliance.service 2>/dev/null || true
  fi
  if [ -f "$pid_file" ]; then
    local pid
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pid_file"
  fi
}

install_appliance() {
  local source_bin source_lib
  if [ -x "$here/bin/ferry-appliance" ]; then
    source_bin="$here/bin"
    source_lib="$here/lib/ferry"
  else
    build_release
    source_bin="$built"
    source_lib=
  fi
  confirm "Install the Ferry appliance into $root$prefix, data in $data, port $port?"
  local fresh=1
  [ -x "$bin_dir/ferry-appliance" ] && fresh=0
  say "$([ $fresh -eq 1 ] && echo installing || echo upgrading) binaries in $bin_dir"
  stop_running
  install -d "$bin_dir"
  install -m 0755 "$source_bin/ferry" "$source_bin/ferry-appliance" "$bin_dir/"
  if [ -n "$source_lib" ] && [ -d "$source_lib" ]; then
    install -d "$lib_dir"
    cp -L "$source_lib"/* "$lib_dir/" 2>/dev/null || true
  fi
  install -d "$root$prefix/share/doc/ferry"
  if [ -f "$here/README.md" ]; then install -m 0644 "$here/README.md" "$root$prefix/share/doc/ferry/"; fi
  if [ -f "$here/share/doc/ferry/README.md" ]; then
    install -m 0644 "$here/share/doc/ferry/README.md" "$root$prefix/share/doc/ferry/"
  fi

  local owner=
  if [ -z "$root" ] && [ "$(id -u)" -eq 0 ]; then
    if ! id ferry >/dev/null 2>&1; then
      say "creating system user ferry"
      useradd --system --home-dir "$data_dir" --no-create-home --shell /usr/sbin/nologin ferry
    fi
    owner=ferry
  fi
  install -d -m 0750 "$data"
  install -d -m 0755 "$etc_dir"
  if [ ! -f "$config" ]; then
    say "writing $config"
    local san_list=""
    for s in "${sans[@]+"${sans[@]}"}"; do san_list="${san_list:+$san_list, }\"$s\""; done
    sed -e "s|@DATA_DIR@|$data|" -e "s|@PORT@|$port|" -e "s|@SANS@|$san_list|" \
      "$here/appliance/appliance.yml" >"$config"
    chmod 0644 "$config"
  else
    say "keeping $config"
  fi
  local appliance=("$bin_dir/ferry-appliance")
  say "CA and server certificate in $data/tls"
  "${appliance[@]}" ca --server-certificate --config "$config" >/dev/null
  local password=
  if [ ! -f "$data/users.json" ]; then
    password=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24 || true)
    printf '%s' "$password" | "${appliance[@]}" user add admin --password-stdin --role admin --config "$config" >/dev/null
    say "created the admin user (its password is in the summary at the end, shown this once)"
  else
    say "keeping users"
  fi
  local imported=0
  for bundle in "$here"/bundles/*.tar; do
    [ -e "$bundle" ] || continue
    say "importing $(basename "$bundle")"
    "${appliance[@]}" import "$bundle" --config "$config" | sed 's/^/   /'
    imported=$((imported + 1))
  done
  [ "$imported" -eq 0 ] && say "no bundles in $here/bundles"
  local images
  images=$("${appliance[@]}" images --config "$config")  # also creates the store's directories
  if [ -n "$owner" ]; then chown -R "$owner:$owner" "$data"; fi
  # The CA where anyone on this host can read it (the data directory is 0750), in a directory of
  # its own that skopeo's and podman's --cert-dir can use.
  local ca_dir="$etc_dir/ca"
  if [ -f "$data/tls/ca.crt" ]; then
    install -d -m 0755 "$ca_dir"
    install -m 0644 "$data/tls/ca.crt" "$ca_dir/ca.crt"
  fi

  local answered=-1
  if [ "$start" -eq 1 ]; then
    if uses_systemd; then
      say "installing and starting ferry-appliance.service"
      sed -e "s|@PREFIX@|$prefix|g" -e "s|@DATA_DIR@|$data_dir|g" "$here/appliance/ferry-appliance.service" >"$unit"
      systemctl daemon-reload
      systemctl enable --now ferry-appliance.service
      systemctl restart ferry-appliance.service
    else
      say "starting the appliance in the background"
      local as_owner=()
      if [ -n "$owner" ]; then as_owner=(setpriv --reuid="$owner" --regid="$owner" --init-groups --); fi
      detach nohup "${as_owner[@]+"${as_owner[@]}"}" "${appliance[@]}" serve --config "$config" \
        </dev/null >>"$data/serve.log" 2>&1
      echo $! >"$pid_file"
      echo "   pid $(cat "$pid_file"), log $data/serve.log; stop it with: kill \$(cat $pid_file)"
    fi
    answered=0
    for _ in $(seq 100); do
      if answers "$port" "$data/tls/ca.crt"; then answered=1; break; fi
      sleep 0.1
    done
  fi

  # The URL: the host's FQDN, else its name; a name that does not resolve here is replaced by an
  # address from the server certificate (whose names and addresses are listed too).
  local host fqdn dns=() ips=() entry
  fqdn=$(hostname -f 2>/dev/null) || fqdn=
  host=${fqdn:-$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)}
  while read -r entry; do
    case "$entry" in
      DNS:*) dns+=("${entry#DNS:}") ;;
      "IP Address:"*) ips+=("$(short_address "${entry#IP Address:}")") ;;
    esac
  done < <(certificate_names "$data/tls/server.crt")
  local unresolved=
  if ! getent hosts "$host" >/dev/null 2>&1; then
    unresolved=$host
    host=127.0.0.1
    for entry in "${ips[@]+"${ips[@]}"}"; do
      case "$entry" in 127.*|*:*) ;; *) host=$entry; break ;; esac
    done
  fi
  "${appliance[@]}" client-config "$host:$port" --config "$config" >"$etc_dir/clients.txt"

  # The summary: what a person needs next, and nothing else.
  local also=() name
  for entry in "${ips[@]+"${ips[@]}"}"; do
    [ "$entry" = "$host" ] && continue
    case "$entry" in *:*) also+=("https://[$entry]:$port") ;; *) also+=("https://$entry:$port") ;; esac
  done
  local image
  image=$(printf '%s\n' "$images" | awk '$1 ~ /\/demo\/web:/ { print $1; exit }')
  [ -n "$image" ] || image=$(printf '%s\n' "$images" | awk 'NF { print $1; exit }')
  local count
  count=$(printf '%s\n' "$images" | awk 'NF' | wc -l)
  local creds="admin:${password:-PASSWORD}"
  case "$answered" in
    1) say "done: the Ferry appliance serves https://$host:$port" ;;
    0) say "done, but the Ferry appliance does not answer on port $port yet" ;;
    *) say "done: the Ferry appliance is installed (not started)" ;;
  esac
  echo
  echo "   URL           https://$host:$port"
  if [ -n "$unresolved" ]; then echo "                 (this host's name, $unresolved, does not resolve here: an address is used)"; fi
  if [ ${#also[@]} -gt 0 ]; then echo "                 also ${also[*]}"; fi
  if [ ${#dns[@]} -gt 0 ]; then
    local names=""
    for name in "${dns[@]}"; do names="${names:+$names, }$name"; done
    echo "                 names in its certificate: $names"
  fi
  case "$answered" in
    0) echo "   NOT ANSWERING after 10 s: see $(uses_systemd && echo "journalctl -u ferry-appliance" || echo "$data/serve.log")" ;;
    -1) echo "   (not started: --no-start)" ;;
  esac
  if [ -n "$password" ]; then
    echo "   admin user    admin   (its password is shown this once, here: save it now)"
    echo "   password:     $password"
  else
    echo "   admin user    admin   (its password was shown by the first install; more users:"
    echo "                 ferry-appliance user add NAME --password-stdin --role ROLE)"
  fi
  echo "   CA file       $ca_dir/ca.crt   (a copy of $data/tls/ca.crt; clients trust it)"
  echo "   clients       ferry-appliance client-config $host:$port --for docker|containerd|podman|k3s|rke2|system"
  echo "                 prints what one client needs (CA file, containerd hosts.toml, podman registries.conf.d,"
  echo "                 docker daemon.json, k3s registries.yaml); all of it is in $etc_dir/clients.txt"
  if [ -n "$image" ]; then
    echo "   images        $count served (ferry-appliance images); pull one from this host:"
    echo
    echo "   skopeo copy --src-cert-dir $ca_dir --src-creds '$creds' docker://$host:$port/$image oci-archive:/tmp/ferry-pull.tar"
    echo "   podman pull --cert-dir $ca_dir --creds '$creds' $host:$port/$image"
    echo "   ctr images pull --tlscacert $ca_dir/ca.crt --user '$creds' $host:$port/$image"
  else
    echo "   images        none yet: ferry-appliance import BUNDLE.tar --config $config"
  fi
}

# answers PORT CA: the appliance answers on 127.0.0.1:PORT: over TLS with curl (verified with the
# generated CA, else with an operator's own certificate), or without curl the port is open.
answers() {
  if command -v curl >/dev/null; then
    curl -s -o /dev/null --cacert "$2" "https://127.0.0.1:$1/healthz" 2>/dev/null ||
      curl -s -o /dev/null -k "https://127.0.0.1:$1/healthz" 2>/dev/null
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

# certificate_names FILE: the server certificate's subjectAltName entries, one a line ("DNS:name",
# "IP Address:addr"); without openssl, this host's addresses.
certificate_names() {
  if command -v openssl >/dev/null && [ -f "$1" ]; then
    openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr ',' '\n' | sed 's/^ *//'
  else
    local address
    for address in $(hostname -I 2>/dev/null); do echo "IP Address:$address"; done
    echo "IP Address:127.0.0.1"
  fi
}

# short_address ADDRESS: an IPv6 address as openssl prints it (FD00:0:0:0:0:0:0:2) written short
# (fd00::2); anything else unchanged.
short_address() {
  case "$1" in
    *:*) printf '%s\n' "$1" | sed -E 's/(^|:)0(:0)+(:|$)/::/' | tr 'A-F' 'a-f' ;;
    *) printf '%s\n' "$1" ;;
  esac
}

uninstall() {
  confirm "Remove the Ferry appliance from $root$prefix$([ $purge -eq 1 ] && echo ", with its data in $data")?"
  stop_running
  if uses_systemd && [ -f "$unit" ]; then
    systemctl disable ferry-appliance.service 2>/dev/null || true
  fi
  rm -f "$unit" "$bin_dir/ferry" "$bin_dir/ferry-appliance"
  rm -rf "$lib_dir" "$root$prefix/share/doc/ferry"
  if uses_systemd; then systemctl daemon-reload || true; fi
  if [ "$purge" -eq 1 ]; then
    rm -rf "$data" "$etc_dir"
    if [ -z "$root" ] && [ "$(id -u)" -eq 0 ] && id ferry >/dev/null 2>&1; then userdel ferry || true; fi
    say "removed the appliance, its data and its configuration"
  else
    say "removed the appliance; kept $data and $etc_dir (--purge removes them)"
  fi
}

case "$action" in
  package) package ;;
  uninstall) uninstall ;;
  install) install_appliance ;;
esac
