#!/bin/sh
# Start opencode's web server with authentication, always, as the runtime user.
#
# Started as root (the image has no USER), it first gives the user `opencode` the uid and
# gid the tool asks for (OCC_UID / OCC_GID: the owner of the user's mounted folders, so
# files the agent writes there belong to that owner on the host), hands it the tool's
# own data, then drops to it with setpriv and runs itself again under tini. Nothing else
# ever runs as root. Started as any other user (`docker run --user`), it skips straight to opencode.
#
# The password arrives as a file that the tool writes into the container before its
# first start (through the engine's archive API). It is handed to opencode in the
# environment of this process only: never in argv (visible to every user in `ps`) and
# never in the container's configured environment (visible in `docker inspect`).
set -eu

PASSWORD_FILE=/run/opencode-cloud/password
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
  chown "$uid:$gid" "$(dirname "$PASSWORD_FILE")"
  [ ! -e "$PASSWORD_FILE" ] || chown "$uid:$gid" "$PASSWORD_FILE"
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

[ -f "$PASSWORD_FILE" ] || fail "no password file at $PASSWORD_FILE (start the service with occ start)."
[ -r "$PASSWORD_FILE" ] || fail "the password file $PASSWORD_FILE is not readable by $(id -un)."
OPENCODE_SERVER_PASSWORD=$(cat "$PASSWORD_FILE")
[ -n "$OPENCODE_SERVER_PASSWORD" ] || fail "the password file $PASSWORD_FILE is empty."
export OPENCODE_SERVER_PASSWORD
export OPENCODE_SERVER_USERNAME="${OPENCODE_SERVER_USERNAME:-opencode}"

# Docker's health check (see the Dockerfile) gives these credentials to curl as a config
# file. curl's syntax: inside double quotes, backslash and double quote are escaped.
quote() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
(
  umask 077
  printf 'user = "%s:%s"\n' "$(quote "$OPENCODE_SERVER_USERNAME")" "$(quote "$OPENCODE_SERVER_PASSWORD")" \
    >"$(dirname "$PASSWORD_FILE")/curlrc"
)
# The web UI's "Open project" dialog starts in what opencode takes for the home, and its
# folder search refuses to index the real home ($HOME). Pointing opencode's home at the
# projects folder makes the dialog list the projects and mounted folders, and find them
# by name; $HOME stays /home/opencode for git, ssh and every other tool.
export OPENCODE_TEST_HOME="$PROJECTS_DIR"

exec opencode web --hostname 0.0.0.0 --port 3000 "$@"
