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
#
# Roles (OCC_ROLE; docs/team.md). Unset or `single`: all of the above, one person. In
# team mode the same image plays two other parts:
#   - `person`: one person's opencode, alone in its container, on port 4096 of all the
#     container's addresses (the person's own network, which only the front door
#     shares), with the internal password the tool wrote to
#     /run/opencode-cloud/internal.password before the first start (root's, 0600). No
#     Caddy and no login service; the health check is the same as in single-user mode.
#   - `door`: the front door. No opencode and no password hash: Caddy and the login
#     service (team mode, its people in /var/lib/opencode-cloud-edge/team.db, a volume)
#     as the edge's user. Caddy asks the login service about every request and proxies it
#     to the instance of the person it names, with that instance's internal password.
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
INTERNAL_PASSWORD_FILE=$RUN_DIR/internal.password
STARTER_SOCKET=$RUN_DIR/starter/starter.sock
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
  prepare_edge_tls
  fresh_edge_dir "$EDGE_DIR/caddy"
}

# The edge's state folder (the door's is a volume: made the edge's, 0700, at every
# start) and the TLS files the tool wrote, made the edge's.
prepare_edge_tls() {
  /usr/bin/install -d -o "$EDGE_UID" -g "$EDGE_UID" -m 0700 "$TLS_DIR" "$EDGE_STATE_DIR"
  if [ "$TLS_MODE" != off ]; then
    [ -f "$TLS_DIR/cert.pem" ] && [ -f "$TLS_DIR/key.pem" ] \
      || fail "TLS is on ($TLS_MODE) but $TLS_DIR holds no certificate and key (start the service with occ start)."
    # On a swarm they are secrets, mounted read-only and the edge's already.
    [ "$(/usr/bin/stat -c %u:%g:%a "$TLS_DIR/cert.pem")" = "$EDGE_UID:$EDGE_UID:644" ] \
      || give_to_edge 0644 "$TLS_DIR/cert.pem"
    [ "$(/usr/bin/stat -c %u:%g:%a "$TLS_DIR/key.pem")" = "$EDGE_UID:$EDGE_UID:600" ] \
      || give_to_edge 0600 "$TLS_DIR/key.pem"
  fi
}

# The edge's folder for this start, and the folders named, all the edge's, 0700.
fresh_edge_dir() {
  /usr/bin/rm -rf "$EDGE_DIR"
  /usr/bin/install -d -o "$EDGE_UID" -g "$EDGE_UID" -m 0700 "$EDGE_DIR" "$@"
}

# A person's container: the internal password the tool wrote before the first start (or
# a swarm secret), made root's only (the health check gets its own copy, the edge's, in curlrc; opencode
# gets it in its environment). Sets INTERNAL_PASSWORD.
read_internal_password() {
  [ -f "$INTERNAL_PASSWORD_FILE" ] && [ ! -L "$INTERNAL_PASSWORD_FILE" ] \
    || fail "no internal password at $INTERNAL_PASSWORD_FILE (the tool writes it before the first start)."
  # On a swarm it is a secret, mounted read-only and root's already (0400).
  if [ "$(/usr/bin/stat -c %u:%g:%a "$INTERNAL_PASSWORD_FILE")" != 0:0:400 ]; then
    /usr/bin/chown -h 0:0 "$INTERNAL_PASSWORD_FILE"
    /usr/bin/chmod 0600 "$INTERNAL_PASSWORD_FILE"
  fi
  [ -s "$INTERNAL_PASSWORD_FILE" ] || fail "the internal password file $INTERNAL_PASSWORD_FILE is empty."
  [ "$(/usr/bin/stat -c %s "$INTERNAL_PASSWORD_FILE")" -le 4096 ] \
    || fail "the internal password file $INTERNAL_PASSWORD_FILE is larger than 4 KiB."
  INTERNAL_PASSWORD=$(/usr/bin/cat "$INTERNAL_PASSWORD_FILE")
  # One line of printable characters (a trailing newline is dropped above): it goes into
  # curl's configuration and into an HTTP header.
  case "$INTERNAL_PASSWORD" in
    "" | *[![:print:]]*) fail "the internal password in $INTERNAL_PASSWORD_FILE is not one line of printable characters." ;;
  esac
}

# curl's config syntax: inside double quotes, backslash and double quote are escaped.
quote() { printf '%s' "$1" | /usr/bin/sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

# curl's configuration for the image's health check, the edge's only. In a single-user or a
# person's container it holds opencode's internal password (the check asks opencode); the
# door's is empty (its Caddy answers the check itself, write_door_config).
write_curlrc() {
  (
    umask 077
    if [ -n "${INTERNAL_PASSWORD:-}" ]; then
      printf 'user = "%s:%s"\n' "$(quote "$OPENCODE_SERVER_USERNAME")" "$INTERNAL_PASSWORD" >"$EDGE_DIR/curlrc"
    else
      printf '# the front door: no credentials, its Caddy answers the health check\n' >"$EDGE_DIR/curlrc"
    fi
  )
}

# Where Caddy serves (HTTPS unless OCC_TLS=off): sets site, tls and hsts.
caddy_site() {
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
}

# Caddy's global options, the same for one person and for the door. Timeouts: a client
# gets 10 s for its request head and 2 min for a body; an idle keep-alive connection ends
# after 5 min. No write timeout: the event stream and the terminal stay open as long as
# the page does.
caddy_globals() {
  /usr/bin/cat <<CADDY
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
CADDY
}

# The login service's own pages (one `handle` of the site). They take small bodies only
# (16 KiB, with a length: a form): anything larger, or a POST without a length
# (chunked), is answered here and never reaches the service. Caddy lets its idle
# connections to the service go after 10 s, before the service's own 15 s, so that it
# never sends a request on a connection the service is closing.
caddy_login_pages() {
  /usr/bin/cat <<CADDY
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
CADDY
}

# Caddy's configuration and the health check's credentials, both readable by the edge
# only: they hold opencode's internal password.
write_edge_config() {
  upstream_auth=$(printf '%s:%s' "$OPENCODE_SERVER_USERNAME" "$INTERNAL_PASSWORD" | /usr/bin/base64 -w0)
  caddy_site
  write_curlrc
  (
    umask 077
    {
      caddy_globals
      /usr/bin/cat <<CADDY
$site {
	$tls
	$hsts
	header ?X-Frame-Options SAMEORIGIN
	header +Content-Security-Policy "frame-ancestors 'self'"
CADDY
      caddy_login_pages
      /usr/bin/cat <<CADDY
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
    } >"$EDGE_DIR/Caddyfile"
  )
  [ "$(/usr/bin/id -u)" != 0 ] || /usr/bin/chown -R "$EDGE_UID:$EDGE_UID" "$EDGE_DIR"
}

# The door's Caddy (docs/team.md). The login service's answer to `forward_auth` names the
# person (X-Occ-Person), their instance (X-Occ-Upstream: PREFIX-user-NAME:4096, a name
# only the person's own network resolves) and its internal password (X-Occ-Upstream-Auth);
# Caddy takes these three from that answer and from nowhere else:
#   - a client's own X-Occ-* headers are deleted first, on every request, so that only
#     the login service's answer can set them;
#   - only an upstream of the people's form is used, on port 4096, and only with a Basic
#     password: when the answer lacks one of the headers, this Caddy's forward_auth (2.6)
#     sets it to the text of its own placeholder, `{http.reverse_proxy.header.NAME}`,
#     which matches neither;
#   - on the way to opencode, Authorization is set from X-Occ-Upstream-Auth (Caddy's
#     header_up sets before it deletes, and its placeholders read the request as
#     forward_auth left it), then the X-Occ-* headers and the browser's cookies go.
# An instance that does not answer (stopped, starting: the proxy's 502; 504 when connecting
# timed out, as to a lost node) sends a page load (GET, Accept: text/html) to the
# "starting" page, and anything else gets 503 with Retry-After. On a swarm (OCC_TEAM_SWARM=1) nothing starts an instance: one that does not
# answer is unreachable (its node is down or cut off), and the login service's "starting"
# page says so. `next` is the request's URI as it came, not escaped (this Caddy has no
# placeholder that escapes): the page takes everything after `next=`.
# The image's health check (http://127.0.0.1:4096/global/health, the edge's user) is
# answered by Caddy itself on the loopback address: the door has no opencode.
write_door_config() {
  caddy_site
  write_curlrc
  # (The prefix is letters, digits and dashes: nothing to escape in the pattern.)
  upstream_pattern="^$TEAM_PREFIX-user-[a-z][a-z0-9-]*:$OPENCODE_PORT\$"
  upstream_header=\{http.request.header.X-Occ-Upstream\}
  down_text="The instance is starting." down_retry=2 upstream_keepalive=2m
  if [ "$ON_SWARM" = 1 ]; then
    down_text="The instance is unreachable: the machine it runs on does not answer." down_retry=10
    # A kept connection to an instance whose node is gone, or to the address it had before
    # it moved, takes a request and never answers: connect afresh each time, which fails
    # within the dial timeout and finds the instance at its address of now.
    upstream_keepalive=off
  fi
  (
    umask 077
    {
      caddy_globals
      /usr/bin/cat <<CADDY
http://:$OPENCODE_PORT {
	bind 127.0.0.1
	handle /global/health {
		respond "healthy" 200
	}
	handle {
		respond 404
	}
}
$site {
	$tls
	$hsts
	header ?X-Frame-Options SAMEORIGIN
	header +Content-Security-Policy "frame-ancestors 'self'"
	request_header -X-Occ-Person
	request_header -X-Occ-Upstream
	request_header -X-Occ-Upstream-Auth
	# Caddy's own question, never a client's: its answer would name the instance's password.
	handle /__occ/verify {
		respond 404
	}
CADDY
      caddy_login_pages
      /usr/bin/cat <<CADDY
	handle {
		route {
			request_header -X-Occ-Person
			request_header -X-Occ-Upstream
			request_header -X-Occ-Upstream-Auth
			forward_auth unix/$LOGIN_SOCKET {
				uri /__occ/verify
				copy_headers X-Occ-Person X-Occ-Upstream X-Occ-Upstream-Auth
				transport http {
					dial_timeout 2s
					response_header_timeout 10s
					keepalive 10s
				}
			}
			# (Header matchers, not a CEL expression: on every request, that costs
			# most of a millisecond more.)
			@no_instance not header_regexp X-Occ-Upstream "$upstream_pattern"
			respond @no_instance "The sign-in names no instance." 500
			@no_password not header_regexp X-Occ-Upstream-Auth "^Basic [A-Za-z0-9+/]+=*\$"
			respond @no_password "The sign-in names no instance." 500
			reverse_proxy {http.request.header.X-Occ-Upstream} {
				header_up Authorization {http.request.header.X-Occ-Upstream-Auth}
				header_up -X-Occ-Person
				header_up -X-Occ-Upstream
				header_up -X-Occ-Upstream-Auth
				# The browser's cookies are the door's (the session): opencode, and so
				# the agent, never sees them.
				header_up -Cookie
				flush_interval -1
				transport http {
					dial_timeout 2s
					keepalive $upstream_keepalive
				}
			}
		}
	}
	handle_errors {
		@instance_down expression \`{err.status_code} in [502, 504] && $upstream_header.matches("$upstream_pattern")\`
		handle @instance_down {
			route {
				@page {
					method GET
					header Accept *text/html*
				}
				redir @page /__occ/starting?next={http.request.uri} 302
				header Retry-After $down_retry
				respond "$down_text" 503
			}
		}
	}
}
CADDY
    } >"$EDGE_DIR/Caddyfile"
  )
  /usr/bin/chown -R "$EDGE_UID:$EDGE_UID" "$EDGE_DIR"
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
ROLE=${OCC_ROLE:-single}
case "$ROLE" in
  single | person | door) ;;
  *) fail "OCC_ROLE must be single, person or door (got $ROLE)." ;;
esac
# The login service listens in the edge's own folder: nothing else in the container reaches it.
LOGIN_SOCKET=$EDGE_DIR/login.sock

# opencode, as the runtime user, with the container's environment (the user's settings,
# provider keys) and its own password, on 127.0.0.1 (behind this container's edge) or, for
# a person in team mode, on all of the container's addresses: its only network is the
# person's, which the door alone shares. The web UI's "Open project" dialog starts in what
# opencode takes for the home, and its folder search refuses to index the real home:
# pointing opencode's home at the projects folder lists the projects and mounted folders
# there; $HOME stays /home/opencode for git, ssh and every other tool. Bun's own extra
# garbage collections keep an idle opencode busy for minutes (docs/operations.md, "What
# it costs while idle"): off, unless the user set BUN_GC_TIMER_INTERVAL. Sets opencode_pid.
start_opencode() {
  (
    unset OCC_UID OCC_GID OCC_TLS OCC_TLS_CERT_SHA256 OCC_ROLE
    export HOME=$HOME_DIR USER=opencode LOGNAME=opencode SHELL=/bin/bash PATH=$RUNTIME_PATH
    export OPENCODE_TEST_HOME="$PROJECTS_DIR" OPENCODE_SERVER_PASSWORD="$INTERNAL_PASSWORD"
    [ -n "${BUN_GC_TIMER_INTERVAL:-}" ] || export BUN_GC_TIMER_DISABLE=1
    cd "$PROJECTS_DIR"
    if [ "$ROLE" = person ]; then
      run_as "$uid" "$gid" /usr/local/bin/opencode web --hostname 0.0.0.0 --port "$OPENCODE_PORT" "$@"
    fi
    run_as "$uid" "$gid" /usr/local/bin/opencode web --hostname 127.0.0.1 --port "$OPENCODE_PORT" "$@"
  ) &
  opencode_pid=$!
}

edge_env() {
  keep_only LANG
  export PATH=/usr/bin:/bin HOME=$EDGE_STATE_DIR XDG_DATA_HOME=$EDGE_DIR/caddy XDG_CONFIG_HOME=$EDGE_DIR/caddy
}

# The login service, as the edge's user, with the variables named (NAME=VALUE) besides
# its own. Sets login_pid.
start_login() {
  (
    edge_env
    export OCC_EDGE_LISTEN="unix:$LOGIN_SOCKET" OCC_EDGE_HASH_FILE="$PASSWORD_FILE" \
      OCC_EDGE_STATE_DIR="$EDGE_STATE_DIR" OPENCODE_SERVER_USERNAME="$USERNAME"
    for setting in "$@"; do export "${setting?}"; done
    cd "$EDGE_STATE_DIR"
    run_as "$edge_uid" "$edge_uid" /usr/bin/python3 -I "$LIB_DIR/edge.py"
  ) &
  login_pid=$!
}

# Caddy, as the edge's user. Sets caddy_pid.
start_caddy() {
  (
    edge_env
    cd "$EDGE_DIR"
    run_as "$edge_uid" "$edge_uid" /usr/bin/caddy run --config "$EDGE_DIR/Caddyfile" --adapter caddyfile
  ) &
  caddy_pid=$!
}

# This script becomes PID 1's supervisor, as the edge's user with CAP_KILL only (to pass a
# stop on to opencode), and stays the parent of the services. Its plan (JSON) names
# them, how to reload Caddy (SIGHUP: a new certificate) and how to start it afresh
# (SIGUSR1: a new password, every open connection closed).
become_supervisor() {
  edge_env
  unset INTERNAL_PASSWORD upstream_auth
  supervise=(/usr/bin/python3 -I "$LIB_DIR/supervise.py" "$1")
  if [ "$(/usr/bin/id -u)" = 0 ]; then
    exec /usr/bin/setpriv --reuid="$EDGE_UID" --regid="$EDGE_UID" --clear-groups \
      --inh-caps=-all,+kill --ambient-caps=-all,+kill -- "${supervise[@]}"
  fi
  exec "${supervise[@]}"
}

caddy_plan() {
  caddy_run="\"/usr/bin/caddy\", \"run\", \"--config\", \"$EDGE_DIR/Caddyfile\", \"--adapter\", \"caddyfile\""
  printf '"reload": [%s], "restart": {"caddy": [%s]}' \
    "\"/usr/bin/caddy\", \"reload\", \"--config\", \"$EDGE_DIR/Caddyfile\", \"--adapter\", \"caddyfile\", \"--address\", \"unix/$EDGE_DIR/admin.sock\", \"--force\"" \
    "$caddy_run"
}

# Team mode: one person's opencode, for the door only (docs/team.md). The supervisor's
# plan has nothing to reload or start afresh (SIGHUP runs `true`).
run_person() {
  prepare_runtime_user "${OCC_UID:-1000}" "${OCC_GID:-1000}"
  uid=${OCC_UID:-1000} gid=${OCC_GID:-1000} edge_uid=$EDGE_UID
  read_internal_password
  fresh_edge_dir
  write_curlrc
  /usr/bin/chown -R "$EDGE_UID:$EDGE_UID" "$EDGE_DIR"
  start_opencode "$@"
  become_supervisor "$(printf '{"services": {"opencode": %d}, "reload": ["/usr/bin/true"], "restart": {}}' "$opencode_pid")"
}

# Team mode: the front door (docs/team.md). No opencode and no password hash: Caddy and
# the login service in team mode, with its database in the state volume, the starter's
# socket and how long an idle instance runs on.
run_door() {
  TEAM_PREFIX=${OCC_TEAM_PREFIX:-}
  case "$TEAM_PREFIX" in
    "" | -* | *[!a-z0-9-]*) fail "OCC_TEAM_PREFIX must be lower-case letters, digits and dashes (got '$TEAM_PREFIX')." ;;
  esac
  IDLE_STOP=${OCC_TEAM_IDLE_STOP:-0}
  case "$IDLE_STOP" in
    "" | *[!0-9]*) fail "OCC_TEAM_IDLE_STOP must be a number of seconds (got '$IDLE_STOP')." ;;
  esac
  ON_SWARM=${OCC_TEAM_SWARM:-0}
  case "$ON_SWARM" in
    0 | 1) ;;
    *) fail "OCC_TEAM_SWARM must be 0 or 1 (got '$ON_SWARM')." ;;
  esac
  edge_uid=$EDGE_UID INTERNAL_PASSWORD=""
  prepare_edge_tls
  fresh_edge_dir "$EDGE_DIR/caddy"
  write_door_config
  start_login "OCC_EDGE_TEAM_DB=$EDGE_STATE_DIR/team.db" "OCC_EDGE_STARTER=$STARTER_SOCKET" \
    "OCC_EDGE_IDLE_STOP=$IDLE_STOP" "OCC_EDGE_SWARM=$ON_SWARM"
  start_caddy
  become_supervisor "$(printf '{"services": {"login": %d, "caddy": %d}, %s}' "$login_pid" "$caddy_pid" "$(caddy_plan)")"
}

if [ "$ROLE" != single ]; then
  [ "$(/usr/bin/id -u)" = 0 ] \
    || fail "OCC_ROLE=$ROLE needs the entrypoint to start as root (it gives each part its user)."
  "run_$ROLE" "$@"
fi

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
  LOGIN_SOCKET=$EDGE_DIR/login.sock
  run_as() { shift 2; exec "$@"; }
fi

INTERNAL_PASSWORD=$(/usr/bin/od -An -N24 -tx1 /dev/urandom | /usr/bin/tr -d ' \n')
write_edge_config
start_opencode "$@"
start_login
start_caddy
become_supervisor "$(printf '{"services": {"opencode": %d, "login": %d, "caddy": %d}, %s}' \
  "$opencode_pid" "$login_pid" "$caddy_pid" "$(caddy_plan)")"
