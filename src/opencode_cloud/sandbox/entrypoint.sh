#!/bin/sh
# Start opencode's web server with authentication, always.
#
# The password arrives as a file that the tool writes into the container before its
# first start (through the engine's archive API). It is handed to opencode in the
# environment of this process only: never in argv (visible to every user in `ps`) and
# never in the container's configured environment (visible in `docker inspect`).
set -eu

PASSWORD_FILE=/run/opencode-cloud/password

fail() {
  echo "opencode-cloud: $*" >&2
  echo "opencode-cloud: refusing to start opencode without authentication." >&2
  # 78 (EX_CONFIG): the container is misconfigured, trying again will not help.
  exit 78
}

[ -f "$PASSWORD_FILE" ] || fail "no password file at $PASSWORD_FILE (start the service with occ start)."
[ -r "$PASSWORD_FILE" ] || fail "the password file $PASSWORD_FILE is not readable by $(id -un)."
OPENCODE_SERVER_PASSWORD=$(cat "$PASSWORD_FILE")
[ -n "$OPENCODE_SERVER_PASSWORD" ] || fail "the password file $PASSWORD_FILE is empty."
export OPENCODE_SERVER_PASSWORD
export OPENCODE_SERVER_USERNAME="${OPENCODE_SERVER_USERNAME:-opencode}"

exec opencode web --hostname 0.0.0.0 --port 3000 "$@"
