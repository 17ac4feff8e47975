#!/bin/bash
# Start opencode's web server behind the edge (TLS, login, guessing limits), always with
# authentication, as the runtime user.
#
# Started as root (the image has no USER), it first gives the user `opencode` the uid and
# gid the tool asks for (OCC_UID / OCC_GID: the owner of the user's mounted folders, so
# files the agent writes there belong to that owner on the host), hands it the tool's
# own data, then drops to it with setpriv and runs itself again under tini. Nothing else
# ever runs as root. Started as any other user (`docker run --user`), it skips straight to opencode.
#
# The user's password never enters the container: the tool writes only its bcrypt hash
# there (through the engine's archive API) before the first start, and again on
# `occ auth rotate`. Three processes run side by side under tini, and the container ends
# when any of them does (Docker then restarts it):
#   - Caddy, the edge: the only port published (3000), HTTPS unless OCC_TLS=off, with
#     the certificate the tool wrote to $TLS_DIR; it asks edge.py about every request
#     and proxies the allowed ones to opencode;
#   - edge.py on 127.0.0.1:4097: the login page, session cookies, HTTP Basic checks
#     against the hash, and the limit on failed attempts;
#   - opencode on 127.0.0.1:4096, with an internal password made afresh at every start
#     that only Caddy knows: handed to opencode in its environment only, never in argv
#     (visible in `ps`) nor the container's configuration (visible in `docker inspect`).
set -eu

PASSWORD_FILE=/run/opencode-cloud/password.bcrypt
RUN_DIR=/run/opencode-cloud
TLS_DIR=$RUN_DIR/tls
EDGE_PORT=3000
OPENCODE_PORT=4096
AUTH_PORT=4097
HOME_DIR=/home/opencode
PROJECTS_DIR=$HOME_DIR/projects
# The tool's volumes: their files belong to the runtime user. Anything else mounted
# under the home (the user's own folders) is never touched.
DATA_DIRS="$HOME_DIR $HOME_DIR/.local/share/opencode $HOME_DIR/.local/state/opencode $HOME_DIR/.config $PROJECTS_DIR"

fail() {
  echo "opencode-cloud: $*" >&2
  echo "opencode-cloud: refusing to start opencode." >&2
  # 78 (EX_CONFIG): the container is misconfigured, trying again will not help.
  exit 78
}

# Mount points below the home that are not the tool's volumes: host folders to leave
# alone (mountinfo writes a space as \040).
foreign_mounts() {
  awk '{print $5}' /proc/self/mountinfo | while read -r point; do
    point=$(printf '%b' "$point")
    case "$point" in "$HOME_DIR"/*) ;; *) continue ;; esac
    case " $DATA_DIRS " in *" $point "*) continue ;; esac
    printf '%s\n' "$point"
  done
}

# Give every file of the tool's volumes to uid:gid, without descending into host folders.
hand_over_data() {
  owner="$1:$2" uid=$1 gid=$2
  set --
  while IFS= read -r point; do
    [ -z "$point" ] || set -- "$@" -path "$point" -prune -o
  done <<MOUNTS
$(foreign_mounts)
MOUNTS
  for dir in $DATA_DIRS; do
    find "$dir" -xdev "$@" \( ! -user "$uid" -o ! -group "$gid" \) -exec chown -h "$owner" {} +
  done
}

# Docker makes a root-owned folder in the home or projects volume for each host folder
# mounted there; once that mount is gone, the empty folder would linger in the project
# list. (A folder still mounted, or not empty, is never removed: rmdir refuses.)
remove_stale_mount_points() {
  mounted=$(awk '{print $5}' /proc/self/mountinfo)
  for dir in "$HOME_DIR"/*/ "$PROJECTS_DIR"/*/; do
    dir=${dir%/}
    [ -d "$dir" ] && [ "$(stat -c %u "$dir")" = 0 ] || continue
    printf '%s\n' "$mounted" | grep -qxF "$dir" && continue
    rmdir "$dir" 2>/dev/null || true
  done
}

become_runtime_user() {
  uid=${OCC_UID:-1000}
  gid=${OCC_GID:-1000}
  case "$uid:$gid" in *[!0-9:]* | :* | *:) fail "OCC_UID and OCC_GID must be numbers (got $uid:$gid)." ;; esac
  [ "$uid" != 0 ] || fail "the runtime user must not be root (OCC_UID=0)."
  if [ "$(id -u opencode):$(id -g opencode)" != "$uid:$gid" ]; then
    # Edited in place rather than with usermod, which would also chown the user's
    # mounted folders.
    sed -i "s/^opencode:x:[0-9]*:[0-9]*:/opencode:x:$uid:$gid:/" /etc/passwd
    sed -i "s/^opencode:x:[0-9]*:/opencode:x:$gid:/" /etc/group
  fi
  if [ "$(stat -c %u:%g "$HOME_DIR")" != "$uid:$gid" ]; then
    echo "opencode-cloud: giving the home and data volumes to uid $uid, gid $gid" >&2
    hand_over_data "$uid" "$gid"
  fi
  chown "$uid:$gid" "$RUN_DIR"
  [ ! -e "$PASSWORD_FILE" ] || chown "$uid:$gid" "$PASSWORD_FILE"
  [ ! -d "$TLS_DIR" ] || chown -R "$uid:$gid" "$TLS_DIR"
  remove_stale_mount_points
  # tini (PID 1: reaps zombies, forwards signals) runs as the runtime user too.
  exec setpriv --reuid="$uid" --regid="$gid" --init-groups --inh-caps=-all \
    -- /usr/bin/tini -- "$0" "$@"
}

if [ "$(id -u)" = 0 ]; then
  become_runtime_user "$@"
elif [ "$$" = 1 ]; then
  exec /usr/bin/tini -- "$0" "$@"
fi

[ -f "$PASSWORD_FILE" ] || fail "no password file (the password's hash) at $PASSWORD_FILE (start the service with occ start)."
[ -r "$PASSWORD_FILE" ] || fail "the password file $PASSWORD_FILE is not readable by $(id -un)."
[ -s "$PASSWORD_FILE" ] || fail "the password file $PASSWORD_FILE is empty."
export OPENCODE_SERVER_USERNAME="${OPENCODE_SERVER_USERNAME:-opencode}"
TLS_MODE=${OCC_TLS:-off}
if [ "$TLS_MODE" != off ]; then
  [ -r "$TLS_DIR/cert.pem" ] && [ -r "$TLS_DIR/key.pem" ] \
    || fail "TLS is on ($TLS_MODE) but $TLS_DIR holds no certificate and key (start the service with occ start)."
fi

# opencode's own password: internal, new at every start, known to Caddy and to Docker's
# health check only.
INTERNAL_PASSWORD=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
# curl's config syntax: inside double quotes, backslash and double quote are escaped.
quote() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
(
  umask 077
  printf 'user = "%s:%s"\n' "$(quote "$OPENCODE_SERVER_USERNAME")" "$INTERNAL_PASSWORD" >"$RUN_DIR/curlrc"
  if [ "$TLS_MODE" = off ]; then
    site="http://:$EDGE_PORT"
    tls=""
  else
    site="https://:$EDGE_PORT"
    tls="tls $TLS_DIR/cert.pem $TLS_DIR/key.pem"
  fi
  # Caddy's placeholders {$NAME} are read from its environment when it loads this file.
  cat >"$RUN_DIR/Caddyfile" <<CADDY
{
	admin off
	auto_https off
	default_sni localhost
	grace_period 2s
	storage file_system $RUN_DIR/caddy
	log {
		output stderr
		level WARN
	}
}
$site {
	$tls
	handle /__occ/* {
		reverse_proxy 127.0.0.1:$AUTH_PORT
	}
	handle {
		forward_auth 127.0.0.1:$AUTH_PORT {
			uri /__occ/verify
		}
		reverse_proxy 127.0.0.1:$OPENCODE_PORT {
			header_up Authorization "Basic {\$OCC_UPSTREAM_AUTH}"
			flush_interval -1
		}
	}
}
CADDY
)
# The web UI's "Open project" dialog starts in what opencode takes for the home, and its
# folder search refuses to index the real home ($HOME). Pointing opencode's home at the
# projects folder makes the dialog list the projects and mounted folders, and find them
# by name; $HOME stays /home/opencode for git, ssh and every other tool.
export OPENCODE_TEST_HOME="$PROJECTS_DIR"
# opencode runs on Bun, which adds garbage collections of its own to those of its
# JavaScript engine: whenever the heap size changed since its last one, it collects again
# 16 ms later. Idle, each collection changes the heap size itself, so that can go on for
# many minutes at about four times the CPU opencode otherwise uses idle. Without Bun's
# extra collections the engine still collects as memory is allocated (docs/operations.md,
# "What it costs while idle"). Setting BUN_GC_TIMER_INTERVAL in the service's environment
# keeps Bun's collections, at that interval.
if [ -z "${BUN_GC_TIMER_INTERVAL:-}" ]; then
  export BUN_GC_TIMER_DISABLE=1
fi

children=""
stop_children() {
  # shellcheck disable=SC2086
  [ -z "$children" ] || kill -TERM $children 2>/dev/null || true
}
trap stop_children TERM INT HUP

OPENCODE_SERVER_PASSWORD="$INTERNAL_PASSWORD" \
  opencode web --hostname 127.0.0.1 --port "$OPENCODE_PORT" "$@" &
children="$children $!"
OCC_EDGE_LISTEN="127.0.0.1:$AUTH_PORT" OCC_EDGE_HASH_FILE="$PASSWORD_FILE" \
  OCC_EDGE_STATE_DIR="$HOME_DIR/.local/state/opencode-cloud-edge" \
  python3 /usr/local/lib/opencode-cloud/edge.py &
children="$children $!"
OCC_UPSTREAM_AUTH=$(printf '%s:%s' "$OPENCODE_SERVER_USERNAME" "$INTERNAL_PASSWORD" | base64 -w0) \
  XDG_DATA_HOME="$RUN_DIR/caddy" XDG_CONFIG_HOME="$RUN_DIR/caddy" \
  caddy run --config "$RUN_DIR/Caddyfile" --adapter caddyfile &
children="$children $!"

# The first of the three to end ends the container (with its exit code); the others are
# stopped cleanly. A stop (SIGTERM from Docker, through tini) reaches all three.
code=0
wait -n || code=$?
stop_children
wait || true
exit "$code"
