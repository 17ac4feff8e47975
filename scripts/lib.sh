# Shared by the scripts in this folder: package installs and the project's virtualenv.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${OCC_VENV:-$ROOT/.venv}

# Install the Debian packages that are not installed yet (one apt run for all of them).
ensure_debian_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
