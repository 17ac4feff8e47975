#!/usr/bin/env bash
# A Docker Swarm of three engines on this machine, for the cluster tests and by hand.
# Needs root.
#
#   scripts/swarm.sh up      build it (nothing happens when it is already up)
#   scripts/swarm.sh down    stop it all and delete its data
#   scripts/swarm.sh status  print whether it is up (exit 0 only when it is)
#   scripts/swarm.sh env     print the DOCKER_HOST of the manager (for `eval`)
#
# OCC_SWARM_ID=K (0-9, default 0) picks one of ten independent swarms: K=0 is the one
# described below; K>0 uses names occswK-*, subnet 10.209.K.0/24, this machine's address
# 10.209.(255-K).1, and /tmp/occswK, /var/lib/occswK. Node host names are occsw-nN in all.
#
# What `up` builds (docs/cluster.md, "A test swarm on one machine"):
#   occsw-net      a network namespace holding the bridge occsw-br (10.209.0.1/24) and a
#                  registry (Debian's docker-registry) on 10.209.0.1:5000
#   occsw-n1..3    one network namespace per node, eth0 10.209.0.11..13 on the bridge,
#                  each with its own dockerd (socket $STATE/nN/docker.sock, and
#                  /run/docker.sock in its own /run as on a real machine; its own
#                  containerd, /run and /etc/docker), n1 the manager, n2 and n3 workers
#   occsw-h        a veth from this machine (10.209.255.1) into occsw-net (10.209.255.2):
#                  this machine reaches the nodes; the nodes reach nothing but each other
#                  and the registry (no default route, and occsw-net forwards only
#                  connections opened from this machine, under its own address)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ID=${OCC_SWARM_ID:-0}
case "$ID" in [0-9]) ;; *) echo "swarm: OCC_SWARM_ID must be a digit 0-9, not '$ID'" >&2; exit 2 ;; esac
P=occsw # the prefix of this swarm's namespaces, links, cgroups and directories
[ "$ID" = 0 ] || P="occsw$ID"
STATE=${OCC_SWARM_DIR:-/tmp/$P}     # sockets, configs, logs (outside /run: see up)
DATA=${OCC_SWARM_DATA:-/var/lib/$P} # the engines' data and the registry's storage
LOCK="$STATE.lock"
NET=$P-net
BRIDGE=$P-br
SUBNET=10.209.$ID
REGISTRY_PORT=5000
HOST_ADDR=10.209.$((255 - ID)).1
NET_ADDR=10.209.$((255 - ID)).2
NODES=(1 2 3)

say() { echo "swarm: $*" >&2; }
die() { say "$*"; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, more dockerds)"; }

sock() { echo "$STATE/n$1/docker.sock"; }
dk() { # dk NODE ARGS...: the docker CLI on node NODE
  local n=$1
  shift
  docker -H "unix://$(sock "$n")" "$@"
}
ping_engine() { curl -sf --max-time 2 --unix-socket "$(sock "$1")" http://d/_ping >/dev/null 2>&1; }
in_net() { nsenter --net="/run/netns/$1" -- "${@:2}"; }

pid_alive() { # pid_alive PIDFILE
  local pid
  pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && [ -e "/proc/$pid" ]
}

spawn() { # spawn LOG CMD...: a daemon in its own session, without the lock's descriptor
  local log=$1
  shift
  (exec setsid "$@" </dev/null >>"$log" 2>&1 9>&-) &
}

# --- the network ------------------------------------------------------------------------

setup_network() {
  ip netns add "$NET"
  in_net "$NET" ip link set lo up
  in_net "$NET" ip link add "$BRIDGE" type bridge
  in_net "$NET" ip addr add "$SUBNET.1/24" dev "$BRIDGE"
  in_net "$NET" ip link set "$BRIDGE" up
  # This machine's way in.
  ip link add $P-h type veth peer name $P-hp
  ip link set $P-hp netns "$NET"
  ip addr add "$HOST_ADDR/30" dev "$P-h"
  ip link set $P-h up
  ip route add "$SUBNET.0/24" via "$NET_ADDR" dev "$P-h"
  in_net "$NET" ip addr add "$NET_ADDR/30" dev $P-hp
  in_net "$NET" ip link set $P-hp up
  in_net "$NET" sysctl -qw net.ipv4.ip_forward=1
  # Forward only what this machine opens, and show it to the nodes as the bridge's own
  # address, to which they have a route; bridged traffic between nodes passes.
  in_net "$NET" iptables -w -P FORWARD DROP
  in_net "$NET" iptables -w -A FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  in_net "$NET" iptables -w -A FORWARD -i $P-hp -o "$BRIDGE" -j ACCEPT
  in_net "$NET" iptables -w -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  in_net "$NET" iptables -w -t nat -A POSTROUTING -o "$BRIDGE" -s "$HOST_ADDR/32" -j MASQUERADE
  local n
  for n in "${NODES[@]}"; do
    ip netns add "$P-n$n"
    ip link add "$P-v$n" type veth peer name "$P-e$n"
    ip link set "$P-v$n" netns "$NET"
    ip link set "$P-e$n" netns "$P-n$n"
    in_net "$NET" ip link set "$P-v$n" master "$BRIDGE" up
    in_net "$P-n$n" ip link set lo up
    in_net "$P-n$n" ip link set "$P-e$n" name eth0
    in_net "$P-n$n" ip addr add "$SUBNET.1$n/24" dev eth0
    in_net "$P-n$n" ip link set eth0 up
  done
}

start_registry() {
  mkdir -p "$DATA/registry"
  cat >"$STATE/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $DATA/registry}, delete: {enabled: true}}
http: {addr: "$SUBNET.1:$REGISTRY_PORT"}
EOF
  spawn "$STATE/registry.log" nsenter --net="/run/netns/$NET" -- \
    sh -c "echo \$\$ >'$STATE/registry.pid'; exec docker-registry serve '$STATE/registry.yml'"
}

# Run in the node's new mount and UTS namespaces: drop the copies of this machine's engine
# mounts (they would pin its containers' layers), give the node a /run and /etc/docker of
# its own (so dockerd starts its own containerd and makes its own engine ID), its host
# name (the swarm's node name), then become its dockerd.
node_main() { # node_main N CONFIG
  local m
  findmnt -rn -o TARGET | grep -E "^/(run|var/lib/docker|var/lib/containerd)(/|$)" |
    sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
  mount -t tmpfs -o mode=0755 tmpfs /etc/docker
  hostname "occsw-n$1"
  exec dockerd --config-file "$2"
}

start_node() { # start_node N
  local n=$1 dir="$STATE/n$1"
  mkdir -p "$dir/exec" "$DATA/n$n"
  cat >"$dir/daemon.json" <<EOF
{
  "data-root": "$DATA/n$n",
  "exec-root": "$dir/exec",
  "pidfile": "$dir/dockerd.pid",
  "hosts": ["unix://$dir/docker.sock", "unix:///run/docker.sock"],
  "group": "root",
  "containerd-namespace": "$P-n$n",
  "containerd-plugins-namespace": "$P-n$n-plugins",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "cgroup-parent": "/$P-n$n",
  "bip": "10.210.$n.1/24",
  "default-address-pools": [{"base": "10.21$((n + 1)).0.0/16", "size": 24}],
  "insecure-registries": ["$SUBNET.1:$REGISTRY_PORT"]
}
EOF
  spawn "$dir/dockerd.log" nsenter --net="/run/netns/$P-n$n" -- unshare -m -u -- \
    bash -euo pipefail -c "$(declare -f node_main); node_main $n '$dir/daemon.json'"
}

wait_node() { # wait_node N
  local n=$1
  for _ in $(seq 1 120); do
    ping_engine "$n" && return 0
    sleep 0.25
  done
  say "the dockerd of node $n did not answer within 30 s; its last log lines:"
  tail -n 20 "$STATE/n$n/dockerd.log" >&2 || true
  return 1
}

form_swarm() {
  dk 1 swarm init --advertise-addr "$SUBNET.11" --listen-addr "$SUBNET.11:2377" \
    --default-addr-pool 10.209.128.0/17 --default-addr-pool-mask-length 24 >/dev/null
  local token n
  token=$(dk 1 swarm join-token -q worker)
  for n in "${NODES[@]:1}"; do
    dk "$n" swarm join --token "$token" --advertise-addr "$SUBNET.1$n" \
      --listen-addr "$SUBNET.1$n:2377" "$SUBNET.11:2377" >/dev/null
  done
}

# --- state ------------------------------------------------------------------------------

check() { # one line per piece; exit 0 when all are up
  local ok=0 n ready
  for n in "${NODES[@]}"; do
    if ping_engine "$n"; then echo "node $n engine: up"; else echo "node $n engine: down"; ok=1; fi
  done
  ready=$(dk 1 node ls --format '{{.Status}}' 2>/dev/null | grep -c Ready || true)
  echo "swarm: $ready of ${#NODES[@]} nodes ready"
  [ "$ready" = "${#NODES[@]}" ] || ok=1
  if pid_alive "$STATE/registry.pid"; then echo "registry: up"; else echo "registry: down"; ok=1; fi
  return $ok
}

anything_left() {
  ip netns list 2>/dev/null | grep -qE "^$P-" && return 0
  ip link show $P-h >/dev/null 2>&1 && return 0
  [ -d "$STATE" ] || [ -d "$DATA" ]
}

pids_in_netns() { # pids_in_netns NAME: every process in that network namespace
  local want p
  [ -e "/run/netns/$1" ] || return 0
  want=$(stat -L -c %i "/run/netns/$1")
  for p in /proc/[0-9]*; do
    [ "$(stat -L -c %i "$p/ns/net" 2>/dev/null)" = "$want" ] && echo "${p#/proc/}"
  done
  return 0
}

pids_in_cgroup() { # pids_in_cgroup NAME: the containers' processes under a cgroup parent
  local f
  for f in /sys/fs/cgroup/*/"$1"; do
    if [ -d "$f" ]; then find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -u
}

do_down() {
  local n d engines=()
  # The engines all at once (each stops its containers and its containerd).
  for n in "${NODES[@]}"; do
    if pid_alive "$STATE/n$n/dockerd.pid"; then engines+=("$(cat "$STATE/n$n/dockerd.pid")"); fi
  done
  kill_and_wait 15 "${engines[@]}"
  local left=()
  for n in "${NODES[@]}"; do
    # shellcheck disable=SC2207
    left+=($(pids_in_cgroup "$P-n$n") $(pids_in_netns "$P-n$n"))
  done
  kill_and_wait 5 "${left[@]}"
  for n in "${NODES[@]}"; do ip netns del "$P-n$n" 2>/dev/null || true; done
  # shellcheck disable=SC2046
  kill_and_wait 5 $(pids_in_netns "$NET")
  ip netns del "$NET" 2>/dev/null || true
  ip link del $P-h 2>/dev/null || true
  for n in "${NODES[@]}"; do
    find /sys/fs/cgroup -maxdepth 2 -type d -name "$P-n$n" -print0 2>/dev/null |
      while IFS= read -r -d '' d; do
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
      done
  done
  # The engines' leftovers under the data root (their overlay mounts died with them).
  if [ -d "$DATA" ]; then
    { findmnt -rn -o TARGET | grep -F "$DATA/" || true; } | sort -r | while read -r d; do
      umount -l "$d" 2>/dev/null || true
    done
    rm -rf "$DATA"
  fi
  rm -rf "$STATE"
}

do_up() {
  if check >/dev/null 2>&1; then say "already up"; return 0; fi
  if anything_left; then say "cleaning up a partial swarm first"; do_down; fi
  ensure_debian_packages iproute2 iptables util-linux curl docker-registry
  command -v dockerd >/dev/null || ensure_debian_packages docker.io
  local started n
  started=$EPOCHREALTIME
  mkdir -p "$STATE" "$DATA"
  setup_network
  start_registry
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in "${NODES[@]}"; do wait_node "$n"; done
  form_swarm
  say "up in $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s:" \
    "manager DOCKER_HOST=unix://$(sock 1), registry $SUBNET.1:$REGISTRY_PORT"
}

main() {
  local cmd=${1:-status}
  case "$cmd" in
    up | down)
      need_root
      mkdir -p "$(dirname "$STATE")"
      exec 9>"$LOCK"
      flock 9
      "do_$cmd"
      [ "$cmd" = up ] || say "down"
      ;;
    status)
      if check; then echo "up"; else echo "down"; return 1; fi
      ;;
    env)
      echo "export DOCKER_HOST=unix://$(sock 1)"
      ;;
    *)
      echo "usage: $0 up|down|status|env" >&2
      exit 2
      ;;
  esac
}

main "$@"
