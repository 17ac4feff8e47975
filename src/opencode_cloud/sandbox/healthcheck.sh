#!/bin/sh
# Docker's health check: is opencode answering on its health endpoint?
#
# Auth is always on, so curl needs the credentials. They reach curl as a config file on
# stdin (`-K -`): printf is a shell builtin, so the password never shows in any
# process's arguments.
set -eu

PASSWORD_FILE=/run/opencode-cloud/password
[ -r "$PASSWORD_FILE" ] || exit 1
password=$(cat "$PASSWORD_FILE")
username=${OPENCODE_SERVER_USERNAME:-opencode}

# curl's config syntax: inside double quotes, backslash and double quote are escaped.
quote() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

printf 'user = "%s:%s"\n' "$(quote "$username")" "$(quote "$password")" \
  | curl -fsS -o /dev/null --max-time 2 -K - http://127.0.0.1:3000/global/health
