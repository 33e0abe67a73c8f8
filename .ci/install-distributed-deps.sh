#!/usr/bin/env bash
# PostgreSQL and Redis from Debian's packages, for the distributed scenario (tests/distributed).
# Quick when they are there; installs them when missing and we are root (CI); otherwise says how.
# Never starts or configures the system services: the scenario runs its own on private ports.
set -euo pipefail

have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; }
have_redis() { command -v redis-server >/dev/null; }

if have_postgres && have_redis; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "The distributed scenario needs PostgreSQL and Redis: apt-get install postgresql redis-server (as root)."
    echo "Without them it is skipped."
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: the packages' post-install scripts do not start the system's own servers.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql redis-server >/dev/null
have_postgres && have_redis
echo "Installed: $(ls -d /usr/lib/postgresql/*/bin | tail -1), $(redis-server --version | cut -d' ' -f1-3)"
