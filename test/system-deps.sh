#!/usr/bin/env bash
# The programs the tests start for real on loopback: nginx, HAProxy, Caddy, PostgreSQL (with
# psql), Chromium (the browser tests drive it with playwright-core; no browser download) and
# nats-server (JetStream, for shared channels). `npm test` runs this first (pretest). Missing
# ones are installed from Debian's packages when running as root with apt-get (CI, and fresh
# machines set up as root); otherwise it says what to install and fails, since no test is
# skipped for want of them.
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v caddy >/dev/null 2>&1 || [ -x /usr/bin/caddy ] || missing+=(caddy)
{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null 2>&1; } || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test/system-deps.sh: installing ${missing[*]} (Debian packages) for the tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  echo "test/system-deps.sh: the tests need ${missing[*]}; on Debian or Ubuntu: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
