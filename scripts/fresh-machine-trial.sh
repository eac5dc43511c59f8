#!/usr/bin/env bash
# The first ten minutes on a fresh machine (issue 16), repeated: the README's command lines, exactly
# as written, run as root in a container made from a bare Debian 12 (bookworm) root file system
# (debootstrap minbase + ca-certificates + git) with nothing added but the Swift toolchain.
#
#   sudo scripts/fresh-machine-trial.sh [--toolchain DIR] [--mirror URL] [--work DIR] [--separate] [--keep]
#                                       [--prepare-only]
#
#   --toolchain DIR  the Swift toolchain to mount read-only at /opt/swift (default: the one whose
#                    swift is on PATH, e.g. /opt/swift)
#   --mirror URL     the Debian mirror for debootstrap (default: the host's bookworm source)
#   --work DIR       where the root file system, podman's storage and the logs go
#                    (default: a new /var/tmp/ferry-trial-XXXXXX; it needs about 8 GB)
#   --separate       each command line in a fresh container of its own (default: one container,
#                    the lines in order, as a newcomer types them)
#   --only N         only command line N, in a fresh container
#   --keep           keep the root file system, the image and podman's storage (default: only the logs)
#   --prepare-only   make the image, check in a container of it that apt reaches the mirror and git
#                    the dependencies, show what its bare `swift --version` says, and stop there (a
#                    few minutes; nothing is built)
#
# What the container gets from the host: the package mirror configuration (apt sources and the
# apt.conf.d files that set Acquire:: options such as a proxy, with the keyrings they name; git's
# url.*.insteadOf rules, which is how SwiftPM's dependencies come from a local mirror, with each
# local mirror directory mounted read-only; SwiftPM's mirrors.json), the toolchain (read-only), and
# the checkout's files (tracked and untracked, not ignored ones: no .build, no bundles/*.tar).
# Nothing else: no apt credentials. The container is podman's (--storage-driver vfs, its own
# storage under --work), privileged (the tests start containerd and podman), with its own network
# namespace (podman's default network, no published port: the appliance's port 5000 stays inside).
#
# It prints each command line's exit code and time, keeps their logs, and after the first line
# (the quickstart and install.sh) also runs the skopeo pull command install.sh printed. Exit 0 when
# every one passed. Takes about 20 minutes on 2 cores; not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
. scripts/lib.sh

toolchain=
mirror=
work=
separate=0
only=
keep=0
prepare_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --toolchain) toolchain=${2%/}; shift ;;
    --mirror) mirror=$2; shift ;;
    --work) work=${2%/}; shift ;;
    --separate) separate=1 ;;
    --only) only=$2; shift ;;
    --keep) keep=1 ;;
    --prepare-only) prepare_only=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh-machine-trial.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
  shift
done
if [ "$(id -u)" -ne 0 ]; then
  echo "fresh-machine-trial.sh: run it as root (debootstrap and podman need it)" >&2
  exit 1
fi

if [ -z "$toolchain" ]; then
  swift_path=$(command -v swift || true)
  [ -n "$swift_path" ] && toolchain=$(cd "$(dirname "$(readlink -f "$swift_path")")/../.." && pwd)
fi
if [ -z "$toolchain" ] || [ ! -x "$toolchain/usr/bin/swift" ]; then
  echo "fresh-machine-trial.sh: no Swift toolchain (DIR/usr/bin/swift): give --toolchain DIR" >&2
  exit 1
fi

# The README's command lines: the first ```sh block, without the comments.
mapfile -t commands < <(awk '/^```sh$/ { inside = 1; next } inside && /^```/ { exit }
  inside { sub(/[ \t]+#.*$/, ""); if (NF) print }' README.md)
if [ ${#commands[@]} -eq 0 ]; then
  echo "fresh-machine-trial.sh: no command lines in README.md's first sh block" >&2
  exit 1
fi

stage "checking the host's Debian packages"
ensure_packages debootstrap debian-archive-keyring podman runc containernetworking-plugins iptables git tar

# The host's bookworm mirror (debootstrap honours http_proxy; apt's proxy setting becomes it).
# shellcheck disable=SC2016 # $(...) is apt's format, not the shell's
host_bookworm=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
  awk '$2 == "bookworm" { print $1; exit }')
[ -n "$mirror" ] || mirror=${host_bookworm:-http://deb.debian.org/debian/}
eval "$(apt-config shell apt_http_proxy Acquire::http::Proxy)"
if [ -n "${apt_http_proxy:-}" ] && [ -z "${http_proxy:-}" ]; then export http_proxy=$apt_http_proxy; fi

if [ -z "$work" ]; then work=$(mktemp -d /var/tmp/ferry-trial-XXXXXX); fi
mkdir -p "$work/logs"
rootfs=$work/rootfs
image=localhost/ferry-trial:bookworm
# runc with cgroupfs: crun refuses hosts with hybrid cgroups (v1 controllers beside v2), which is
# what a machine that is itself a container often has.
podman=(podman --storage-driver vfs --root "$work/storage" --runroot "$work/run" --events-backend file
  --runtime runc --cgroup-manager cgroupfs)
# Limits no higher than this process's own: without CAP_SYS_RESOURCE (again: a machine that is a
# container) they cannot be raised, and podman's defaults would raise them.
nofile=$(ulimit -Hn)
[ "$nofile" != unlimited ] || nofile=1048576
run_flags=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=8192:8192)
container=

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local status=$?
  set +e  # clean up as much as can be
  if [ -n "$container" ]; then "${podman[@]}" rm -f "$container" >/dev/null 2>&1 || true; fi
  if [ -n "${debootstrap_pid:-}" ]; then
    # debootstrap and what it started (its own process group, see below).
    kill -- "-$debootstrap_pid" 2>/dev/null || kill "$debootstrap_pid" 2>/dev/null || true
    wait "$debootstrap_pid" 2>/dev/null || true
  fi
  # debootstrap mounts /proc and /sys inside the root file system while it works.
  if [ -d "$rootfs" ]; then
    grep -o " $rootfs/[^ ]*" /proc/mounts | sort -r | while read -r mount; do umount -l "$mount"; done
  fi
  if [ "$keep" -eq 0 ]; then
    "${podman[@]}" rmi -f "$image" >/dev/null 2>&1 || true
    rm -rf --one-file-system "$rootfs" "$work/rootfs.tar" "$work/storage" "$work/run"
  fi
  echo "logs: $work/logs$([ "$keep" -eq 1 ] && echo "; kept: $work")"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$SECONDS
stage "debootstrap bookworm (minbase, ca-certificates, git) from $mirror into $rootfs"
# In a process group of its own (setsid), so that stopping it stops what it runs too.
setsid debootstrap --variant=minbase --include=ca-certificates,git bookworm "$rootfs" "$mirror" \
  >"$work/logs/debootstrap.log" 2>&1 &
debootstrap_pid=$!
if ! wait "$debootstrap_pid"; then
  debootstrap_pid=
  tail -n 20 "$work/logs/debootstrap.log" >&2
  echo "debootstrap failed (log: $work/logs/debootstrap.log)" >&2
  exit 1
fi
debootstrap_pid=
debootstrap_seconds=$((SECONDS - started))

stage "copying the host's package mirror configuration in"
if [ -n "$host_bookworm" ]; then
  rm -f "$rootfs/etc/apt/sources.list"
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] && cp "$file" "$rootfs$file"
  done
  # The keyrings the sources name (Signed-By), where the new root file system lacks them.
  for file in /etc/apt/trusted.gpg /etc/apt/trusted.gpg.d/* /etc/apt/keyrings/*; do
    [ -f "$file" ] && install -D -m 0644 "$file" "$rootfs$file"
  done
  grep -rhoE '(Signed-By: *|signed-by=)/[^] ]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    sed -E 's/^(Signed-By: *|signed-by=)//' | sort -u | while read -r keyring; do
      if [ -f "$keyring" ] && [ ! -e "$rootfs$keyring" ]; then install -D -m 0644 "$keyring" "$rootfs$keyring"; fi
    done || true
else
  echo "   the host has no bookworm source: the root file system keeps debootstrap's sources.list ($mirror)"
fi
for file in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
  [ -f "$file" ] && grep -q 'Acquire' "$file" && cp "$file" "$rootfs$file"
done
mirror_mounts=()
if command -v git >/dev/null; then
  while read -r key value; do
    git config --file "$rootfs/root/.gitconfig" --add "$key" "$value"
    case "$key" in
      url.*.insteadof)
        local_dir=${key#url.}
        local_dir=${local_dir%.insteadof}
        local_dir=${local_dir#file://}
        local_dir=${local_dir%/}
        if [ -n "$local_dir" ] && [ -d "$local_dir" ]; then
          case " ${mirror_mounts[*]-} " in
            *" $local_dir:$local_dir:ro "*) ;;
            *) mirror_mounts+=(-v "$local_dir:$local_dir:ro") ;;
          esac
        fi
        ;;
    esac
  done < <({ git config --system --get-regexp '^url\.' || true; git config --global --get-regexp '^url\.' || true; } 2>/dev/null)
fi
if [ -f "$HOME/.swiftpm/configuration/mirrors.json" ]; then
  install -D -m 0644 "$HOME/.swiftpm/configuration/mirrors.json" "$rootfs/root/.swiftpm/configuration/mirrors.json"
fi

stage "copying the checkout (tracked and untracked files, not ignored ones) to /root/ferry"
mkdir -p "$rootfs/root/ferry"
git -C "$repo" ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' path; do [ -e "$repo/$path" ] && printf '%s\0' "$path"; done |
  tar -C "$repo" --null -T - -cf - | tar -C "$rootfs/root/ferry" -xf -
printf '%s\n' "${commands[@]}" >"$rootfs/root/trial-commands"
cat >"$rootfs/root/trial-run.sh" <<'RUN'
#!/bin/bash
# Runs the README's command lines given by number (all without arguments) in /root/ferry, each
# line's output to /trial/command-N.log and to standard output; one line per command in
# /trial/results.tsv: number, exit code, seconds, command.
cd /root/ferry || exit 1
mapfile -t commands </root/trial-commands
if [ $# -eq 0 ]; then set -- $(seq ${#commands[@]}); fi
for n in "$@"; do
  line=${commands[$((n - 1))]}
  echo "==== trial: command $n: $line"
  start=$(date +%s)
  bash -c "$line" </dev/null 2>&1 | tee "/trial/command-$n.log"
  status=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$n" "$status" "$(($(date +%s) - start))" "$line" >>/trial/results.tsv
  echo "==== trial: command $n exited $status"
  # The pull command install.sh printed, pasted as printed.
  pull=$(grep -m1 -E '^ *skopeo copy ' "/trial/command-$n.log" | sed 's/^ *//')
  if [ "$status" -eq 0 ] && [ -n "$pull" ]; then
    echo "==== trial: the printed pull command: $pull"
    start=$(date +%s)
    bash -c "$pull" </dev/null >"/trial/command-$n-pull.log" 2>&1
    status=$?
    printf '%s\t%s\t%s\t%s\n' "$n (pull)" "$status" "$(($(date +%s) - start))" "$pull" >>/trial/results.tsv
  fi
done
RUN
chmod 0755 "$rootfs/root/trial-run.sh"

stage "importing the root file system into podman (vfs storage in $work/storage)"
tar -C "$rootfs" --numeric-owner -cf "$work/rootfs.tar" .
"${podman[@]}" import --quiet "$work/rootfs.tar" "$image" >/dev/null
rm -f "$work/rootfs.tar"
setup_seconds=$((SECONDS - started))
if [ "$prepare_only" -eq 1 ]; then
  stage "prepared $image (setup $((setup_seconds / 60))m$(printf '%02d' $((setup_seconds % 60)))s); in a container of it:"
  # shellcheck disable=SC2016 # for the container's shell
  "${podman[@]}" run --rm "${run_flags[@]}" -v "$toolchain:/opt/swift:ro" "${mirror_mounts[@]+"${mirror_mounts[@]}"}" "$image" \
    sh -c 'echo "swift --version: $(/opt/swift/usr/bin/swift --version 2>&1 | head -n 1)"
      apt-get update -q >/dev/null 2>&1 && echo "apt-get update: ok" || echo "apt-get update: FAILED"
      git ls-remote https://github.com/apple/swift-log.git HEAD >/dev/null 2>&1 &&
        echo "git (SwiftPM dependencies): ok" || echo "git (SwiftPM dependencies): FAILED"' 2>&1 |
    sed 's/^/   /' || true
  exit 0
fi

run_container() {
  container=ferry-trial-$$-$1
  shift
  "${podman[@]}" run --rm "${run_flags[@]}" --name "$container" --privileged --hostname ferry-trial \
    -v "$toolchain:/opt/swift:ro" "${mirror_mounts[@]+"${mirror_mounts[@]}"}" -v "$work/logs:/trial" \
    -e PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/swift/usr/bin \
    -e HOME=/root -e LANG=C.UTF-8 -e TERM=dumb \
    "$image" /root/trial-run.sh "$@" || true
  container=
}

rm -f "$work/logs/results.tsv"
touch "$work/logs/results.tsv"
if [ -n "$only" ]; then
  stage "command $only in a fresh container: ${commands[$((only - 1))]}"
  run_container "$only" "$only"
elif [ "$separate" -eq 1 ]; then
  for n in $(seq ${#commands[@]}); do
    stage "command $n in a fresh container: ${commands[$((n - 1))]}"
    run_container "$n" "$n"
  done
else
  stage "the README's command lines, in order, in one fresh container"
  run_container all
fi

echo
echo "Fresh Debian 12 + Swift toolchain ($toolchain), the README's command lines:"
printf '  %-10s %-6s %-8s %s\n' "command" "exit" "time" "line"
failed=0
ran=0
while IFS=$'\t' read -r n status seconds line; do
  printf '  %-10s %-6s %-8s %s\n' "$n" "$status" "$((seconds / 60))m$(printf '%02d' $((seconds % 60)))s" "$line"
  [ "$status" -eq 0 ] || failed=1
  case "$n" in *pull*) ;; *) ran=$((ran + 1)) ;; esac
done <"$work/logs/results.tsv"
echo "  (setup: debootstrap $((debootstrap_seconds / 60))m$(printf '%02d' $((debootstrap_seconds % 60)))s," \
  "whole setup $((setup_seconds / 60))m$(printf '%02d' $((setup_seconds % 60)))s; total $((SECONDS / 60))m$(printf '%02d' $((SECONDS % 60)))s)"
expected=${#commands[@]}
[ -z "$only" ] || expected=1
if [ "$ran" -lt "$expected" ]; then
  echo "  only $ran of $expected command lines ran (see $work/logs)"
  failed=1
fi
exit "$failed"
