#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: system packages, virtualenv, project install.
# Safe to run any number of times; does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_ctrl >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# PostgreSQL: Debian's `postgresql` package brings its current major version; the tests and
# `phd bench ingest` use the newest server with initdb and pg_ctl under
# /usr/lib/postgresql/VERSION/bin (phd_cli/pg_local.py), so any version found there will do.
pg_server=no
for bindir in /usr/lib/postgresql/*/bin; do
  if [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ]; then pg_server=yes; fi
done
[ "$pg_server" = yes ] || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts a system mosquitto/postgres; the project runs its own on loopback ports.
  $sudo_cmd systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
  .venv/bin/pip install -q -U pip
fi

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing the project and its extras into .venv"
  if ! .venv/bin/pip install -q -e ".[agent,gateway,server,dev]" >.venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log
    echo "setup: pip install failed (log above); check network access to PyPI" >&2
    exit 1
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi
