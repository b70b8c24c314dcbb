#!/usr/bin/env bash
# Make sure this machine has what the project needs, and nothing more:
#   * a PostgreSQL server (Debian/Ubuntu package `postgresql`),
#   * pg_cron for that server's major version (`postgresql-<major>-cron`),
#   * Python's venv module (`python3-venv`),
#   * the en_US.UTF-8 locale, where the tests' PostgreSQL 18 (which has no ICU)
#     finds a collation that is not byte order (generated with localedef).
# Arguments are more packages to install (make's extensions target passes the
# build dependencies that python -m cnpg_trace_summaries.dev.extensions lists).
# As root on Debian/Ubuntu it installs what is missing with apt-get; otherwise
# it prints the exact command to run and fails (the locale is only a hint).
set -euo pipefail

newest_major() {
  local dir major=""
  for dir in /usr/lib/postgresql/*/bin/postgres; do
    [ -x "$dir" ] || continue
    dir=${dir#/usr/lib/postgresql/}
    major=$(printf '%s\n%s\n' "$major" "${dir%%/*}" | sort -n | tail -1)
  done
  printf '%s' "$major"
}

missing_packages() {
  local major
  major=$(newest_major)
  if [ -z "$major" ]; then
    echo postgresql
  elif [ ! -e "/usr/lib/postgresql/$major/lib/pg_cron.so" ]; then
    echo "postgresql-$major-cron"
  fi
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo python3-venv
  fi
}

install() {
  export DEBIAN_FRONTEND=noninteractive
  echo "bootstrap: apt-get install -y $*" >&2
  apt-get install -y -q "$@" >/dev/null
}

ensure_locale() {
  locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$' && return 0
  if [ "$(id -u)" -eq 0 ] && command -v localedef >/dev/null 2>&1; then
    echo "bootstrap: localedef -i en_US -f UTF-8 en_US.UTF-8" >&2
    localedef -i en_US -f UTF-8 en_US.UTF-8 || true
  else
    echo "bootstrap: hint: sudo localedef -i en_US -f UTF-8 en_US.UTF-8 lets the collation tests bite on PostgreSQL 18" >&2
  fi
}
ensure_locale

wanted="$(missing_packages | tr '\n' ' ')$*"
[ -z "${wanted// /}" ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: missing packages: $wanted" >&2
  echo "bootstrap: on Debian/Ubuntu run: sudo apt-get update && sudo apt-get install -y $wanted" >&2
  echo "bootstrap: (postgresql first, then postgresql-<major>-cron for the major it installed)" >&2
  exit 1
fi

echo "bootstrap: apt-get update" >&2
apt-get update -q >/dev/null
# The server comes first: pg_cron's package name carries the server's major version.
# shellcheck disable=SC2086
install $wanted
wanted=$(missing_packages | tr '\n' ' ')
if [ -n "${wanted// /}" ]; then
  # shellcheck disable=SC2086
  install $wanted
fi
wanted=$(missing_packages | tr '\n' ' ')
if [ -n "${wanted// /}" ]; then
  echo "bootstrap: still missing after apt-get: $wanted" >&2
  exit 1
fi
