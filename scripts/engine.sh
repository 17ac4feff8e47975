#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine.
#
#   scripts/engine.sh start   install Debian's docker.io if dockerd is missing, start the
#                             daemon if it is not answering; prints "started" when this
#                             call started it, "running" when it was already up
#   scripts/engine.sh stop    stop a daemon that scripts/engine.sh started
#
# Machines without systemd (containers, CI runners) are the reason this exists: there the
# daemon has to be started by hand, and a killed daemon leaves a stale pid file behind.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PIDFILE=/var/run/docker.pid
OURS=/var/run/opencode-cloud-dockerd.started
LOG=/var/log/opencode-cloud-dockerd.log

say() { echo "engine: $*" >&2; }

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

install_engine() {
  if command -v dockerd >/dev/null 2>&1; then return; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "dockerd is not installed and this is not a Debian-like system."
    say "Install Docker Engine (https://docs.docker.com/engine/install/), then run this again."
    exit 1
  fi
  say "installing Debian's docker.io (dockerd, containerd, runc)"
  apt_install docker.io
}

# The local daemon is the one in its pid file: other dockerd processes (the remote test
# host's, in a network namespace) are not it.
local_daemon_runs() {
  [ -f "$PIDFILE" ] && [ "$(cat "/proc/$(cat "$PIDFILE")/comm" 2>/dev/null)" = dockerd ]
}

start_engine() {
  if engine_answers; then echo running; return; fi
  # A client may point elsewhere (DOCKER_HOST, a context); only the local daemon is ours to start.
  install_engine
  if [ -f "$PIDFILE" ] && ! local_daemon_runs; then
    say "removing stale $PIDFILE left by a daemon that no longer runs"
    as_root rm -f "$PIDFILE"
  fi
  if ! local_daemon_runs; then
    say "starting dockerd (log: $LOG)"
    as_root bash -c "nohup dockerd >>'$LOG' 2>&1 </dev/null & echo \$! >'$OURS'"
  fi
  for _ in $(seq 1 120); do
    if engine_answers; then echo started; return; fi
    sleep 0.5
  done
  say "dockerd did not answer within 60 s; last log lines:"
  tail -n 20 "$LOG" >&2 || true
  exit 1
}

stop_engine() {
  if [ ! -f "$OURS" ]; then say "no daemon started by this script; leaving the engine alone"; return; fi
  pid=$(cat "$OURS")
  as_root rm -f "$OURS"
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping dockerd (pid $pid)"
    as_root kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    as_root kill -KILL "$pid" 2>/dev/null || true
  fi
}

case "${1:-start}" in
  start) start_engine ;;
  stop) stop_engine ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
