#!/bin/bash
# Start opencode's web server behind the edge (TLS, login, guessing limits), always with
# authentication, with no process left as root once it runs.
#
# Three users, three trust levels:
#   - root, only in this script's first part (the root phase), which runs before any
#     program of the agent could: it gives the runtime user the uid and gid the tool asks
#     for (OCC_UID / OCC_GID: the owner of the user's mounted folders), hands it the
#     tool's volumes, prepares the edge's files, starts the three services below as their
#     users and then becomes the supervisor (supervise.py) as the edge's user. It uses a
#     fixed PATH and absolute paths, and reads and runs nothing the runtime user can
#     write: the home and projects are the agent's, so their files are never opened here.
#   - `opencode` (the runtime user, no capabilities): opencode and everything the agent
#     runs, on 127.0.0.1:4096 inside the container only.
#   - `occ-edge` (uid 61000, no capabilities): Caddy, the only port published (3000),
#     HTTPS unless OCC_TLS=off; and edge.py on a unix socket only the edge's user can
#     reach (not even the agent, in the same network namespace), the login page, sessions,
#     HTTP Basic checks against the password's hash and the guessing limits. Its files
#     (the hash, the TLS key, Caddy's configuration holding opencode's internal password,
#     the sign-in sessions) are its own and closed to the agent.
#
# The user's password never enters the container: the tool writes only its bcrypt hash
# (through the engine's archive API) before the first start and on `occ auth rotate`.
# opencode's own password is internal, made afresh at every start, and known to Caddy,
# to the engine's health check and to opencode (in its environment, never in argv).
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022
cd /

RUN_DIR=/run/opencode-cloud
PASSWORD_FILE=$RUN_DIR/password.bcrypt
TLS_DIR=$RUN_DIR/tls
EDGE_DIR=$RUN_DIR/edge
EDGE_STATE_DIR=/var/lib/opencode-cloud-edge
EDGE_UID=61000
EDGE_PORT=3000
OPENCODE_PORT=4096
HOME_DIR=/home/opencode
PROJECTS_DIR=$HOME_DIR/projects
LIB_DIR=/usr/local/lib/opencode-cloud
# What the runtime user's programs find first: the tools it installed (npm -g, pip --user).
RUNTIME_PATH=$HOME_DIR/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
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
  /usr/bin/awk '{print $5}' /proc/self/mountinfo | while read -r point; do
    point=$(printf '%b' "$point")
    case "$point" in "$HOME_DIR"/*) ;; *) continue ;; esac
    case " $DATA_DIRS " in *" $point "*) continue ;; esac
    printf '%s\n' "$point"
  done
}

# Give every file of the tool's volumes to uid:gid, without descending into host folders
# and without following links (find -P, chown -h): only names and owners are touched.
hand_over_data() {
  owner="$1:$2" uid=$1 gid=$2
  set --
  while IFS= read -r point; do
    [ -z "$point" ] || set -- "$@" -path "$point" -prune -o
  done <<MOUNTS
$(foreign_mounts)
MOUNTS
  for dir in $DATA_DIRS; do
    /usr/bin/find -P "$dir" -xdev "$@" \( ! -user "$uid" -o ! -group "$gid" \) \
      -exec /usr/bin/chown -h "$owner" {} +
  done
}

# Docker makes a root-owned folder in the home or projects volume for each host folder
# mounted there; once that mount is gone, the empty folder would linger in the project
# list. (A folder still mounted, or not empty, or a link, is never removed.) Run as the
# runtime user.
remove_stale_mount_points() {
  mounted=$(/usr/bin/awk '{print $5}' /proc/self/mountinfo)
  for dir in "$HOME_DIR"/*/ "$PROJECTS_DIR"/*/; do
    dir=${dir%/}
    [ ! -L "$dir" ] && [ -d "$dir" ] && [ "$(/usr/bin/stat -c %u "$dir")" = 0 ] || continue
    printf '%s\n' "$mounted" | /usr/bin/grep -qxF "$dir" && continue
    /usr/bin/rmdir "$dir" 2>/dev/null || true
  done
}

# Move the runtime user to uid:gid (edited in place rather than with usermod, which would
# also chown the user's mounted folders) and hand it the tool's volumes.
prepare_runtime_user() {
  uid=$1 gid=$2
  case "$uid:$gid" in *[!0-9:]* | :* | *:) fail "OCC_UID and OCC_GID must be numbers (got $uid:$gid)." ;; esac
  [ "$uid" != 0 ] && [ "$gid" != 0 ] || fail "the runtime user must not be root (OCC_UID=$uid, OCC_GID=$gid)."
  [ "$uid" != "$EDGE_UID" ] && [ "$gid" != "$EDGE_UID" ] \
    || fail "uid and gid $EDGE_UID belong to the edge; the runtime user needs another (got $uid:$gid)."
  if [ "$(/usr/bin/id -u opencode):$(/usr/bin/id -g opencode)" != "$uid:$gid" ]; then
    /usr/bin/sed -i "s/^opencode:x:[0-9]*:[0-9]*:/opencode:x:$uid:$gid:/" /etc/passwd
    /usr/bin/sed -i "s/^opencode:x:[0-9]*:/opencode:x:$gid:/" /etc/group
  fi
  if [ "$(/usr/bin/stat -c %u:%g "$HOME_DIR")" != "$uid:$gid" ]; then
    echo "opencode-cloud: giving the home and data volumes to uid $uid, gid $gid" >&2
    hand_over_data "$uid" "$gid"
  fi
  # Listing the home is reading it: done as its owner (who may remove an empty folder
  # there, root's or not).
  (run_as "$uid" "$gid" /bin/bash "$0" --remove-stale-mount-points)
}

# A file the tool wrote into the container, made the edge's with `mode` (root may change
# the mode of its own files only: CAP_FOWNER is not among the few capabilities it holds).
give_to_edge() {
  /usr/bin/chown -h 0:0 "$2"
  /usr/bin/chmod "$1" "$2"
  /usr/bin/chown -h "$EDGE_UID:$EDGE_UID" "$2"
}

# The edge's files: the hash and TLS files the tool wrote, and a fresh folder for this
# start's configuration (made anew, so nothing left from an earlier run is trusted).
prepare_edge() {
  [ -f "$PASSWORD_FILE" ] && [ ! -L "$PASSWORD_FILE" ] \
    || fail "no password file (the password's hash) at $PASSWORD_FILE (start the service with occ start)."
  [ -s "$PASSWORD_FILE" ] || fail "the password file $PASSWORD_FILE is empty."
  give_to_edge 0600 "$PASSWORD_FILE"
  /usr/bin/install -d -o "$EDGE_UID" -g "$EDGE_UID" -m 0700 "$TLS_DIR" "$EDGE_STATE_DIR"
  if [ "$TLS_MODE" != off ]; then
    [ -f "$TLS_DIR/cert.pem" ] && [ -f "$TLS_DIR/key.pem" ] \
      || fail "TLS is on ($TLS_MODE) but $TLS_DIR holds no certificate and key (start the service with occ start)."
    give_to_edge 0644 "$TLS_DIR/cert.pem"
    give_to_edge 0600 "$TLS_DIR/key.pem"
  fi
  /usr/bin/rm -rf "$EDGE_DIR"
  /usr/bin/install -d -o "$EDGE_UID" -g "$EDGE_UID" -m 0700 "$EDGE_DIR" "$EDGE_DIR/caddy"
}

# curl's config syntax: inside double quotes, backslash and double quote are escaped.
quote() { printf '%s' "$1" | /usr/bin/sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

# Caddy's configuration and the health check's credentials, both readable by the edge
# only: they hold opencode's internal password.
write_edge_config() {
  upstream_auth=$(printf '%s:%s' "$OPENCODE_SERVER_USERNAME" "$INTERNAL_PASSWORD" | /usr/bin/base64 -w0)
  if [ "$TLS_MODE" = off ]; then
    site="http://:$EDGE_PORT"
    tls=""
    hsts=""
  else
    site="https://:$EDGE_PORT"
    tls="tls $TLS_DIR/cert.pem $TLS_DIR/key.pem"
    # Browsers apply HSTS to every port of a host: never to loopback names, where other
    # services of the user may speak plain HTTP.
    hsts="@remote not host localhost 127.0.0.1 ::1
	header @remote Strict-Transport-Security \"max-age=31536000\""
  fi
  (
    umask 077
    printf 'user = "%s:%s"\n' "$(quote "$OPENCODE_SERVER_USERNAME")" "$INTERNAL_PASSWORD" >"$EDGE_DIR/curlrc"
    # Timeouts: a client gets 10 s for its request head and 2 min for a body; an idle
    # keep-alive connection ends after 5 min. No write timeout: the event stream and the
    # terminal stay open as long as the page does. The login service's pages take small
    # bodies only (16 KiB, with a length: a form): anything larger, or a POST without a
    # length (chunked), is answered here and never reaches the service. Caddy lets its
    # idle connections to the service go after 10 s, before the service's own 15 s, so
    # that it never sends a request on a connection the service is closing.
    /usr/bin/cat >"$EDGE_DIR/Caddyfile" <<CADDY
{
	admin unix/$EDGE_DIR/admin.sock
	auto_https off
	default_sni localhost
	grace_period 2s
	storage file_system $EDGE_DIR/caddy
	servers {
		# HTTP/1.1 only: the Caddy of Debian bookworm is built with a Go whose HTTP/2
		# has no defence against streams opened and reset at once (a flood that grows
		# Caddy until the kernel kills it), and HTTP/3 is served by the same build.
		protocols h1
		timeouts {
			read_header 10s
			read_body 2m
			idle 5m
		}
	}
	log {
		output stderr
		level WARN
	}
}
$site {
	$tls
	$hsts
	header ?X-Frame-Options SAMEORIGIN
	header +Content-Security-Policy "frame-ancestors 'self'"
	handle /__occ/* {
		@too_large expression \`{http.request.header.Content-Length}.size() > 5 || int("0" + {http.request.header.Content-Length}) > 16384\`
		respond @too_large 413
		@no_length expression \`{method} == "POST" && {http.request.header.Content-Length} == ""\`
		respond @no_length 411
		request_body {
			max_size 16KB
		}
		reverse_proxy unix/$LOGIN_SOCKET {
			transport http {
				dial_timeout 2s
				response_header_timeout 10s
				keepalive 10s
			}
		}
	}
	handle {
		forward_auth unix/$LOGIN_SOCKET {
			uri /__occ/verify
			transport http {
				dial_timeout 2s
				response_header_timeout 10s
				keepalive 10s
			}
		}
		reverse_proxy 127.0.0.1:$OPENCODE_PORT {
			header_up Authorization "Basic $upstream_auth"
			# The browser's cookies are the edge's (the session): opencode, and so the
			# agent, never sees them.
			header_up -Cookie
			flush_interval -1
		}
	}
}
CADDY
  )
  [ "$(/usr/bin/id -u)" != 0 ] || /usr/bin/chown -R "$EDGE_UID:$EDGE_UID" "$EDGE_DIR"
}

# Run a program with only the environment named (the rest of this script's, which holds
# the container's configuration, is not passed on), as uid:gid, without capabilities.
# Secrets travel in the environment, never in argv.
run_as() {
  uid=$1 gid=$2
  shift 2
  groups=--clear-groups
  [ "$uid" = "$EDGE_UID" ] || groups=--init-groups
  exec /usr/bin/setpriv --reuid="$uid" --regid="$gid" "$groups" --inh-caps=-all -- "$@"
}

# Keep only the variables named; everything else exported is dropped.
keep_only() {
  for name in $(compgen -e); do
    case " $* " in *" $name "*) ;; *) unset "$name" ;; esac
  done
}

if [ "${1:-}" = --remove-stale-mount-points ]; then
  remove_stale_mount_points
  exit 0
fi

TLS_MODE=${OCC_TLS:-off}
export OPENCODE_SERVER_USERNAME="${OPENCODE_SERVER_USERNAME:-opencode}"
USERNAME=$OPENCODE_SERVER_USERNAME

if [ "$(/usr/bin/id -u)" = 0 ]; then
  uid=${OCC_UID:-1000}
  gid=${OCC_GID:-1000}
  prepare_runtime_user "$uid" "$gid"
  prepare_edge
  edge_uid=$EDGE_UID
else
  # Started as another user (`docker run --user`, or a container made by an earlier
  # version of the tool): everything runs as that user, without the edge's separation.
  echo "opencode-cloud: started as uid $(/usr/bin/id -u), not root: the edge runs as the same user as opencode." >&2
  uid=$(/usr/bin/id -u) gid=$(/usr/bin/id -g) edge_uid=$uid
  EDGE_STATE_DIR=$HOME_DIR/.local/state/opencode-cloud-edge
  [ -r "$PASSWORD_FILE" ] && [ -s "$PASSWORD_FILE" ] \
    || fail "no readable password file (the password's hash) at $PASSWORD_FILE."
  EDGE_DIR=$(/usr/bin/mktemp -d /tmp/opencode-cloud-edge.XXXXXX)
  /usr/bin/mkdir -p -m 0700 "$EDGE_DIR/caddy" "$EDGE_STATE_DIR"
  run_as() { shift 2; exec "$@"; }
fi

# The login service listens in the edge's own folder: nothing else in the container reaches it.
LOGIN_SOCKET=$EDGE_DIR/login.sock
INTERNAL_PASSWORD=$(/usr/bin/od -An -N24 -tx1 /dev/urandom | /usr/bin/tr -d ' \n')
write_edge_config

# opencode, as the runtime user, with the container's environment (the user's settings,
# provider keys) and its own password. The web UI's "Open project" dialog starts in what
# opencode takes for the home, and its folder search refuses to index the real home:
# pointing opencode's home at the projects folder lists the projects and mounted folders
# there; $HOME stays /home/opencode for git, ssh and every other tool. Bun's own extra
# garbage collections keep an idle opencode busy for minutes (docs/operations.md, "What
# it costs while idle"): off, unless the user set BUN_GC_TIMER_INTERVAL.
(
  unset OCC_UID OCC_GID OCC_TLS OCC_TLS_CERT_SHA256
  export HOME=$HOME_DIR USER=opencode LOGNAME=opencode SHELL=/bin/bash PATH=$RUNTIME_PATH
  export OPENCODE_TEST_HOME="$PROJECTS_DIR" OPENCODE_SERVER_PASSWORD="$INTERNAL_PASSWORD"
  [ -n "${BUN_GC_TIMER_INTERVAL:-}" ] || export BUN_GC_TIMER_DISABLE=1
  cd "$PROJECTS_DIR"
  run_as "$uid" "$gid" /usr/local/bin/opencode web --hostname 127.0.0.1 --port "$OPENCODE_PORT" "$@"
) &
opencode_pid=$!

edge_env() {
  keep_only LANG
  export PATH=/usr/bin:/bin HOME=$EDGE_STATE_DIR XDG_DATA_HOME=$EDGE_DIR/caddy XDG_CONFIG_HOME=$EDGE_DIR/caddy
}
(
  edge_env
  export OCC_EDGE_LISTEN="unix:$LOGIN_SOCKET" OCC_EDGE_HASH_FILE="$PASSWORD_FILE" \
    OCC_EDGE_STATE_DIR="$EDGE_STATE_DIR" OPENCODE_SERVER_USERNAME="$USERNAME"
  cd "$EDGE_STATE_DIR"
  run_as "$edge_uid" "$edge_uid" /usr/bin/python3 -I "$LIB_DIR/edge.py"
) &
login_pid=$!
(
  edge_env
  cd "$EDGE_DIR"
  run_as "$edge_uid" "$edge_uid" /usr/bin/caddy run --config "$EDGE_DIR/Caddyfile" --adapter caddyfile
) &
caddy_pid=$!

# This script becomes PID 1's supervisor, as the edge's user with CAP_KILL only (to pass a
# stop on to opencode), and stays the parent of the three. Its plan names them, how to
# reload Caddy (SIGHUP: a new certificate) and how to start it afresh (SIGUSR1: a new
# password, every open connection closed).
edge_env
unset INTERNAL_PASSWORD upstream_auth
caddy_run="\"/usr/bin/caddy\", \"run\", \"--config\", \"$EDGE_DIR/Caddyfile\", \"--adapter\", \"caddyfile\""
plan=$(printf '{"services": {"opencode": %d, "login": %d, "caddy": %d}, "reload": [%s], "restart": {"caddy": [%s]}}' \
  "$opencode_pid" "$login_pid" "$caddy_pid" \
  "\"/usr/bin/caddy\", \"reload\", \"--config\", \"$EDGE_DIR/Caddyfile\", \"--adapter\", \"caddyfile\", \"--address\", \"unix/$EDGE_DIR/admin.sock\", \"--force\"" \
  "$caddy_run")
supervise=(/usr/bin/python3 -I "$LIB_DIR/supervise.py" "$plan")
if [ "$(/usr/bin/id -u)" = 0 ]; then
  exec /usr/bin/setpriv --reuid="$EDGE_UID" --regid="$EDGE_UID" --clear-groups \
    --inh-caps=-all,+kill --ambient-caps=-all,+kill -- "${supervise[@]}"
fi
exec "${supervise[@]}"
