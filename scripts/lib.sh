# Shared by the scripts in this folder: package installs and the project's virtualenv.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OCC_VENV:-$ROOT/.venv}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get, non-interactive and quiet. Its chatter (debconf's "delaying package
# configuration", needrestart's "readline() on closed filehandle" where there is no init
# environment, service notes from maintainer scripts) is kept aside and shown only when
# apt-get fails. `env` carries the settings through sudo, which drops the caller's.
apt_quiet() {
  local log status=0
  log=$(mktemp "${TMPDIR:-/tmp}/occ-apt.XXXXXX")
  as_root env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes \
    NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=a \
    apt-get -q -y "$@" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    echo "setup: apt-get $1 failed (exit $status); its last lines:" >&2
    tail -n 25 "$log" >&2
  fi
  rm -f "$log"
  return "$status"
}

# Update the package lists, then install: apt_install [apt-get install options] PACKAGE...
apt_install() {
  apt_quiet update && apt_quiet install "$@"
}

# Install the Debian packages that are not installed yet (one apt run for all of them).
ensure_debian_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}" >&2
  apt_install --no-install-recommends "${missing[@]}"
}

# Create the virtualenv with the package (editable) and its test tools, once.
ensure_venv() {
  if [ ! -x "$VENV/bin/occ" ] || [ "$ROOT/pyproject.toml" -nt "$VENV/.installed" ]; then
    echo "setup: installing opencode-cloud into $VENV" >&2
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    # (grep: some pip configurations warn once per package about missing local indexes)
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test]" 2>&1 \
      | { grep -v "^WARNING: Location" || true; } >&2
    touch "$VENV/.installed"
  fi
}

kill_and_wait() { # kill_and_wait SECONDS PID...: TERM, then KILL what is left
  local secs=$1 p alive
  shift
  [ $# -eq 0 ] && return 0
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 1 $((secs * 4))); do
    alive=()
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    sleep 0.25
  done
  kill -KILL "${alive[@]}" 2>/dev/null || true
}
