#!/usr/bin/env bash
# A "remote host" on this machine for the tests of remote instances: network namespaces
# reached over SSH, one with its own Docker engine. Needs root.
#
#   scripts/remote-host.sh up [--holder PID]
#                                         build it (nothing happens when it is already up);
#                                         PID (a test session) is recorded as using it
#   scripts/remote-host.sh release PID [--down]
#                                         PID no longer uses it; --down: stop it unless
#                                         another live process still does
#   scripts/remote-host.sh down [--purge] stop it all; --purge also deletes the remote
#                                         engine's data (its images), the keys and the user
#   scripts/remote-host.sh status         print whether it is up (exit 0 only when it is)
#   scripts/remote-host.sh drop-connections [occ-remote|occ-remote2]
#                                         kill the SSH sessions (not the listening sshd)
#
# What `up` builds (docs/architecture.md, "The remote test host"):
#   occ-remote   netns, veth occ-rh0 10.203.0.1 <-> 10.203.0.2, NAT to the internet;
#                a Docker engine of its own (socket $STATE/docker.sock, data under $DATA);
#                sshd on 10.203.0.2:2222 (root with id_root, occ-nodock with id_nodock)
#   occ-remote2  netns, veth occ-rh2 10.203.1.1 <-> 10.203.1.2; sshd on port 22, no Docker
# Each namespace also has a mount namespace of its own with a fresh /run, so the
# engine of this machine (/var/run/docker.sock) is not visible there: on occ-remote
# /var/run/docker.sock is the remote engine, on occ-remote2 it does not exist.
# Clients use `ssh -F $STATE/ssh_config ALIAS` (aliases: see write_client_files).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE=${OCC_REMOTE_HOST_DIR:-/run/occ-remote-host}
DATA=${OCC_REMOTE_HOST_DATA:-/var/lib/occ-remote-host}
LOCK="$STATE.lock"
NS_DIR="$STATE/ns"         # a private mount holding the mount namespaces' handles
KEYS="$STATE/keys"         # kept by `down`, removed by `down --purge`
NODOCK_USER=occ-nodock
NODOCK_GECOS="opencode-cloud remote test host"
RULE_TAG="occ-remote-host" # the comment on every iptables rule this script adds
CGROUP_PARENT=occ-remote-host

# name, host-side veth, host address, namespace address, sshd port, has its own engine
HOSTS=(
  "occ-remote occ-rh0 10.203.0.1 10.203.0.2 2222 1"
  "occ-remote2 occ-rh2 10.203.1.1 10.203.1.2 22 0"
)
DOWN_ADDR=10.203.0.9      # in occ-remote's subnet, nobody there
DOWN_MAC=02:00:0a:cb:00:09 # a static neighbour entry: packets go out and vanish (a timeout)

say() { echo "remote-host: $*" >&2; }
die() { say "$*"; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, a second dockerd)"; }

# --- pieces -----------------------------------------------------------------------------

ipt() { iptables -w 10 "$@"; }

add_rule() { # add_rule TABLE CHAIN RULE... (inserted first, once)
  local table=$1 chain=$2
  shift 2
  ipt -t "$table" -C "$chain" "$@" -m comment --comment "$RULE_TAG" 2>/dev/null ||
    ipt -t "$table" -I "$chain" 1 "$@" -m comment --comment "$RULE_TAG"
}

remove_rules() {
  local table line
  for table in nat filter; do
    ipt -t "$table" -S 2>/dev/null | grep -F -- "--comment $RULE_TAG" | while read -r line; do
      # "-A CHAIN ..." -> "-D CHAIN ..."; the words are plain (no quoting in our rules)
      # shellcheck disable=SC2086
      ipt -t "$table" -D ${line#-A } || true
    done
  done
}

# The namespace's resolver: the host's, unless that is a loopback address (a local
# stub such as systemd-resolved's 127.0.0.53, unreachable from the namespace).
usable_nameservers() { grep -E '^nameserver[[:space:]]' "$1" | grep -vE '[[:space:]](127\.|::1)'; }

write_resolv_conf() {
  local ns=$1 src=/etc/resolv.conf
  if ! usable_nameservers "$src" >/dev/null 2>&1 && [ -f /run/systemd/resolve/resolv.conf ]; then
    src=/run/systemd/resolve/resolv.conf
  fi
  usable_nameservers "$src" >/dev/null 2>&1 ||
    die "no nameserver in $src is usable from a network namespace (only loopback ones)"
  mkdir -p "/etc/netns/$ns"
  grep -vE '^nameserver[[:space:]]+(127\.|::1)' "$src" >"/etc/netns/$ns/resolv.conf"
}

# The MTU of this machine's way out (the default route's device): the namespaces and
# the remote engine's containers use it too, so their packets fit.
uplink_mtu() {
  local dev
  dev=$(ip -o route show default 2>/dev/null |
    awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
  if [ -n "$dev" ] && [ -r "/sys/class/net/$dev/mtu" ]; then
    cat "/sys/class/net/$dev/mtu"
  else
    echo 1500
  fi
}

setup_netns() { # setup_netns NAME VETH HOST_ADDR NS_ADDR
  local ns=$1 veth=$2 haddr=$3 naddr=$4 peer="$2p"
  ip netns add "$ns"
  ip link add "$veth" mtu "$MTU" type veth peer name "$peer" mtu "$MTU"
  ip link set "$peer" netns "$ns"
  ip addr add "$haddr/24" dev "$veth"
  ip link set "$veth" up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "$peer" name eth0
  ip -n "$ns" addr add "$naddr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$haddr"
  write_resolv_conf "$ns"
  # Out to the internet through this machine. FORWARD is usually DROP (Docker sets it).
  sysctl -qw net.ipv4.ip_forward=1
  add_rule nat POSTROUTING -s "${naddr%.*}.0/24" ! -o "$veth" -j MASQUERADE
  add_rule filter FORWARD -i "$veth" -j ACCEPT
  add_rule filter FORWARD -o "$veth" -j ACCEPT
}

# Run inside a new mount namespace (from setup_mountns): let go of the mounts of this
# machine that are of no use there (its engine's layers and container namespaces, whose
# copies would pin them), put a fresh tmpfs on /run and bind the state directory back.
prepare_mountns() { # prepare_mountns NAME WITH_ENGINE RESOLV_TARGET
  local ns=$1 engine=$2 resolv_target=$3 m under_run=0
  findmnt -rn -o TARGET | grep -E "^/(run|var/lib/docker|var/lib/containerd)(/|$)" |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  [ "${STATE#/run/}" = "$STATE" ] || under_run=1
  if [ $under_run = 1 ]; then mount --bind "$STATE" "$DATA/stash"; fi
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
  mkdir -p /run/sshd /run/lock
  chmod 1777 /run/lock
  if [ $under_run = 1 ]; then
    mkdir -p "$STATE"
    mount --bind "$DATA/stash" "$STATE"
    umount "$DATA/stash"
  fi
  if [ "${resolv_target#/run/}" != "$resolv_target" ]; then # e.g. systemd-resolved's stub
    mkdir -p "$(dirname "$resolv_target")"
    cp "/etc/netns/$ns/resolv.conf" "$resolv_target"
  else
    mount --bind "/etc/netns/$ns/resolv.conf" /etc/resolv.conf
  fi
  # The usual path of the engine's socket leads to this host's engine, if it has one.
  if [ "$engine" = 1 ]; then ln -s "$STATE/docker.sock" /run/docker.sock; fi
}

# A persistent mount namespace for NAME, entered (with the network namespace) by every
# daemon of that host: see prepare_mountns.
setup_mountns() { # setup_mountns NAME WITH_ENGINE
  local ns=$1 handle="$NS_DIR/$1.mnt"
  touch "$handle"
  unshare --mount="$handle" --propagation private true
  mkdir -p "$DATA/stash"
  nsenter --mount="$handle" --net="/run/netns/$ns" -- env STATE="$STATE" DATA="$DATA" \
    bash -euo pipefail -c "$(declare -f prepare_mountns)
      prepare_mountns $ns $2 $(readlink -f /etc/resolv.conf)"
}

in_ns() { # in_ns NAME CMD...: run on the remote host NAME (its mount and network namespaces)
  local ns=$1
  shift
  nsenter --mount="$NS_DIR/$ns.mnt" --net="/run/netns/$ns" -- "$@"
}

# Start a daemon in its own session (so a test run's Ctrl-C does not reach it), without
# the lock's file descriptor (a daemon holding it would block every later call).
spawn() { # spawn LOG CMD...
  local log=$1
  shift
  (exec setsid "$@" </dev/null >>"$log" 2>&1 9>&-) &
}

start_engine() {
  mkdir -p "$DATA/docker" "$STATE/exec"
  cat >"$STATE/daemon.json" <<EOF
{
  "data-root": "$DATA/docker",
  "exec-root": "$STATE/exec",
  "pidfile": "$STATE/dockerd.pid",
  "hosts": ["unix://$STATE/docker.sock"],
  "group": "root",
  "containerd-namespace": "occ-remote",
  "containerd-plugins-namespace": "occ-remote-plugins",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "cgroup-parent": "/$CGROUP_PARENT",
  "mtu": $MTU
}
EOF
  # No --containerd: /run here is the namespace's own, so dockerd finds no system
  # containerd and starts its own under the exec root.
  spawn "$STATE/dockerd.log" nsenter --mount="$NS_DIR/occ-remote.mnt" \
    --net=/run/netns/occ-remote -- dockerd --config-file "$STATE/daemon.json"
  for _ in $(seq 1 120); do
    if curl -sf --max-time 2 --unix-socket "$STATE/docker.sock" http://d/_ping >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.25
  done
  say "the remote dockerd did not answer within 30 s; last log lines:"
  tail -n 20 "$STATE/dockerd.log" >&2 || true
  return 1
}

ensure_user() {
  id "$NODOCK_USER" >/dev/null 2>&1 && return 0
  # '*': no password, not locked (sshd without PAM refuses locked accounts, even for keys)
  useradd --create-home --shell /bin/bash --comment "$NODOCK_GECOS" --password '*' "$NODOCK_USER"
}

keygen() { # keygen FILE COMMENT: an ed25519 key without passphrase, once
  [ -f "$1" ] || ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1"
}

start_sshd() { # start_sshd NAME ADDR PORT
  local ns=$1 addr=$2 port=$3 dir="$STATE/sshd-$1"
  mkdir -p "$dir/authorized_keys"
  cp "$KEYS/id_root.pub" "$dir/authorized_keys/root"
  if [ "$ns" = occ-remote ]; then
    cp "$KEYS/id_nodock.pub" "$dir/authorized_keys/$NODOCK_USER"
  fi
  chmod 0644 "$dir/authorized_keys/"*
  cat >"$dir/sshd_config" <<EOF
# sshd of the remote test host $ns (scripts/remote-host.sh); /etc/ssh is not used.
ListenAddress $addr
Port $port
HostKey $KEYS/host_$ns
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys/%u
AuthorizedPrincipalsFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers root $NODOCK_USER
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
StreamLocalBindUnlink yes
GatewayPorts no
X11Forwarding no
PermitTunnel no
PrintMotd no
PrintLastLog no
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
LogLevel VERBOSE
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  in_ns "$ns" /usr/sbin/sshd -t -f "$dir/sshd_config"
  in_ns "$ns" /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log" </dev/null 9>&-
  for _ in $(seq 1 40); do
    if timeout 1 bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null; then return 0; fi
    sleep 0.25
  done
  say "sshd of $ns does not listen on $addr:$port; its log:"
  tail -n 20 "$dir/sshd.log" >&2 || true
  return 1
}

write_client_files() {
  local k="$KEYS"
  {
    echo "[10.203.0.2]:2222 $(cut -d' ' -f1,2 "$k/host_occ-remote.pub")"
    echo "10.203.1.2 $(cut -d' ' -f1,2 "$k/host_occ-remote2.pub")"
  } >"$STATE/known_hosts"
  echo "[10.203.0.2]:2222 $(cut -d' ' -f1,2 "$k/host_other.pub")" >"$STATE/known_hosts_changed"
  : >"$STATE/known_hosts_empty"
  # One block per alias: ssh keeps the first value it reads, and adds up IdentityFiles.
  local alias user key known port addr extra
  {
    echo "# Client side of the remote test host (scripts/remote-host.sh):"
    echo "#   ssh -F $STATE/ssh_config ALIAS"
    while read -r alias addr port user key known extra; do
      echo
      echo "Host $alias"
      echo "  HostName $addr"
      echo "  Port $port"
      echo "  User $user"
      echo "  IdentityFile $k/$key"
      echo "  UserKnownHostsFile $STATE/$known"
      [ -z "$extra" ] || echo "  $extra"
    done <<EOF
occ-remote 10.203.0.2 2222 root id_root known_hosts
occ-remote-nodock 10.203.0.2 2222 $NODOCK_USER id_nodock known_hosts
occ-remote-badauth 10.203.0.2 2222 root id_badauth known_hosts
occ-remote-changedkey 10.203.0.2 2222 root id_root known_hosts_changed
occ-remote-unknownkey 10.203.0.2 2222 root id_root known_hosts_empty
occ-remote-refused 10.203.0.2 2223 root id_root known_hosts
occ-remote-down $DOWN_ADDR 2222 root id_root known_hosts ConnectTimeout 3
occ-remote2 10.203.1.2 22 root id_root known_hosts
EOF
    cat <<EOF

Host *
  IdentitiesOnly yes
  StrictHostKeyChecking yes
  GlobalKnownHostsFile /dev/null
  UpdateHostKeys no
  CheckHostIP no
  ConnectTimeout 10
EOF
  } >"$STATE/ssh_config"
  chmod 0644 "$STATE/ssh_config" "$STATE/known_hosts"*
}

# --- state ------------------------------------------------------------------------------

# pid_alive PIDFILE [COMM]: the process runs (and is COMM: pids are reused after a reboot)
pid_alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && [ -e "/proc/$pid" ] &&
    { [ -z "${2:-}" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]; }
}

# One line per piece; exit 0 when all are up.
check() {
  local ok=0 ns
  for ns in occ-remote occ-remote2; do
    if ip netns list 2>/dev/null | awk -v ns="$ns" '$1 == ns {f = 1} END {exit !f}'; then
      echo "netns $ns: up"
    else
      echo "netns $ns: down"
      ok=1
    fi
    if pid_alive "$STATE/sshd-$ns/sshd.pid" sshd; then
      echo "sshd $ns: up"
    else
      echo "sshd $ns: down"
      ok=1
    fi
  done
  if curl -sf --max-time 5 --unix-socket "$STATE/docker.sock" http://d/_ping >/dev/null 2>&1; then
    echo "engine unix://$STATE/docker.sock: up"
  elif [ "$(id -u)" -ne 0 ] && pid_alive "$STATE/dockerd.pid" dockerd; then
    echo "engine unix://$STATE/docker.sock: running (only root may use its socket)"
  else
    echo "engine unix://$STATE/docker.sock: down"
    ok=1
  fi
  [ -f "$STATE/ssh_config" ] || ok=1
  return $ok
}

anything_left() {
  ip netns list 2>/dev/null | grep -qE '^occ-remote2?( |$)' && return 0
  [ -d "$NS_DIR" ] && return 0
  ipt -t nat -S 2>/dev/null | grep -qF -- "--comment $RULE_TAG" && return 0
  ipt -S 2>/dev/null | grep -qF -- "--comment $RULE_TAG" && return 0
  return 1
}

# Pids whose mount namespace is HANDLE's (sshd and its sessions, dockerd, containerd,
# its shims, docker-proxy); none when the handle is gone.
pids_in_mountns() {
  local handle=$1 want p
  mountpoint -q "$handle" 2>/dev/null || return 0
  want=$(stat -L -c %i "$handle")
  for p in /proc/[0-9]*; do
    [ "$(stat -L -c %i "$p/ns/mnt" 2>/dev/null)" = "$want" ] && echo "${p#/proc/}"
  done
  return 0
}

# Container processes: under the engine's cgroup parent.
pids_in_cgroup() {
  local f
  for f in /sys/fs/cgroup/*/"$CGROUP_PARENT" /sys/fs/cgroup/"$CGROUP_PARENT"; do
    if [ -d "$f" ]; then find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -u
}

do_down() {
  local purge=$1 ns
  # The engine first, so it stops its containers and its containerd in order.
  if curl -sf --max-time 5 --unix-socket "$STATE/docker.sock" http://d/_ping >/dev/null 2>&1; then
    local ids
    ids=$(docker -H "unix://$STATE/docker.sock" ps -q 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker -H "unix://$STATE/docker.sock" kill $ids >/dev/null 2>&1 || true
  fi
  if pid_alive "$STATE/dockerd.pid" dockerd; then kill_and_wait 20 "$(cat "$STATE/dockerd.pid")"; fi
  # shellcheck disable=SC2046
  kill_and_wait 5 $(pids_in_cgroup)
  for ns in occ-remote occ-remote2; do
    # shellcheck disable=SC2046
    kill_and_wait 5 $(pids_in_mountns "$NS_DIR/$ns.mnt")
    umount "$NS_DIR/$ns.mnt" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  rmdir /etc/netns 2>/dev/null || true # when nothing else uses it
  ip neigh del "$DOWN_ADDR" dev occ-rh0 2>/dev/null || true
  local veth
  for veth in occ-rh0 occ-rh2; do ip link del "$veth" 2>/dev/null || true; done
  mountpoint -q "$NS_DIR" && umount "$NS_DIR"
  remove_rules
  # The engine's cgroups (empty now); rmdir leaves anything still in use.
  find /sys/fs/cgroup -maxdepth 2 -type d -name "$CGROUP_PARENT" -print0 2>/dev/null |
    while IFS= read -r -d '' d; do
      find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  if [ -d "$STATE" ]; then
    find "$STATE" -mindepth 1 -maxdepth 1 ! -name keys -exec rm -rf {} +
  fi
  if [ "$purge" = 1 ]; then
    rm -rf "$DATA" "$STATE"
    if [ "$(getent passwd "$NODOCK_USER" | cut -d: -f5)" = "$NODOCK_GECOS" ]; then
      userdel --remove "$NODOCK_USER" 2>/dev/null || true
    fi
  fi
}

do_up() {
  if check >/dev/null; then say "already up ($STATE)"; return 0; fi
  if anything_left; then say "cleaning up a partial remote host first"; do_down 0; fi
  ensure_debian_packages openssh-server openssh-client iproute2 iptables util-linux curl
  command -v dockerd >/dev/null || ensure_debian_packages docker.io
  [ -e /sys/fs/cgroup ] || die "no /sys/fs/cgroup"
  local started=$SECONDS
  MTU=$(uplink_mtu)
  mkdir -p "$STATE" "$KEYS" "$NS_DIR" "$DATA"
  chmod 0755 "$STATE"
  # The handles of the mount namespaces need a mount that does not propagate.
  mountpoint -q "$NS_DIR" || mount --bind "$NS_DIR" "$NS_DIR"
  mount --make-private "$NS_DIR"

  keygen "$KEYS/id_root" "root@occ-test-client"
  keygen "$KEYS/id_nodock" "$NODOCK_USER@occ-test-client"
  keygen "$KEYS/id_badauth" "not-authorized@occ-test-client"
  keygen "$KEYS/host_occ-remote" "host key of occ-remote"
  keygen "$KEYS/host_occ-remote2" "host key of occ-remote2"
  keygen "$KEYS/host_other" "a host key nobody uses"
  ensure_user

  local h name veth haddr naddr port engine
  for h in "${HOSTS[@]}"; do
    read -r name veth haddr naddr port engine <<<"$h"
    setup_netns "$name" "$veth" "$haddr" "$naddr"
    setup_mountns "$name" "$engine"
  done
  ip neigh replace "$DOWN_ADDR" lladdr "$DOWN_MAC" dev occ-rh0 nud permanent
  start_engine
  for h in "${HOSTS[@]}"; do
    read -r name veth haddr naddr port engine <<<"$h"
    start_sshd "$name" "$naddr" "$port"
  done
  write_client_files
  say "up in $((SECONDS - started)) s: ssh -F $STATE/ssh_config occ-remote;" \
    "engine unix://$STATE/docker.sock"
}

descendants() { # descendants PID: every process below PID
  local p
  for p in $(pgrep -P "$1" || true); do
    echo "$p"
    descendants "$p"
  done
}

# Test sessions using the host: one file per pid, so concurrent sessions on one machine do
# not take it down under each other.
live_holders() {
  local f
  for f in "$STATE"/holders/*; do
    [ -e "$f" ] || continue
    if kill -0 "${f##*/}" 2>/dev/null; then echo "${f##*/}"; else rm -f "$f"; fi
  done
}

release() { # release PID [--down]
  local pid=${1:?release needs a pid} others
  rm -f "$STATE/holders/$pid"
  [ "${2:-}" = --down ] || return 0
  others=$(live_holders)
  if [ -n "$others" ]; then
    say "still used by pid $(echo "$others" | paste -sd,); leaving it up"
  else
    do_down 0
    say "down"
  fi
}

# Kill every process the listening sshd forked (sessions and what they run): the
# clients see their connections close, as when a link drops; new ones are accepted.
drop_connections() { # drop_connections NAME
  local ns=${1:-occ-remote} listener doomed
  listener=$(cat "$STATE/sshd-$ns/sshd.pid" 2>/dev/null) || die "sshd of $ns is not running"
  doomed=$(descendants "$listener")
  # shellcheck disable=SC2086
  [ -z "$doomed" ] || kill -KILL $doomed 2>/dev/null || true
}

main() {
  local cmd=${1:-status}
  [ $# -gt 0 ] && shift
  case "$cmd" in
    up)
      need_root
      mkdir -p "$(dirname "$STATE")"
      exec 9>"$LOCK"
      flock 9
      do_up
      if [ "${1:-}" = --holder ]; then
        mkdir -p "$STATE/holders"
        : >"$STATE/holders/${2:?--holder needs a pid}"
      fi
      ;;
    release)
      need_root
      exec 9>"$LOCK"
      flock 9
      release "$@"
      ;;
    down)
      need_root
      local purge=0
      [ "${1:-}" = --purge ] && purge=1
      exec 9>"$LOCK"
      flock 9
      do_down "$purge"
      say "down${1:+ ($1)}"
      ;;
    status)
      if check; then echo "up"; else echo "down"; return 1; fi
      ;;
    drop-connections)
      need_root
      drop_connections "$@"
      ;;
    *)
      echo "usage: $0 up [--holder PID]|release PID [--down]|down [--purge]|status" >&2
      echo "       $0 drop-connections [occ-remote|occ-remote2]" >&2
      exit 2
      ;;
  esac
}

main "$@"
