#!/bin/sh
# Run the audit tests against a throw-away PostgreSQL cluster (and SQLite) with pg_virtualenv.
# Usage: tests/audit/run_pg.sh [extra pytest args]   (from anywhere; CI calls it from .ci/run)
# STATION_TEST_PG=1 makes a missing server a failure, never a skip.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
command -v pg_virtualenv >/dev/null 2>&1 || { echo "run_pg.sh: pg_virtualenv not found (apt-get install postgresql)" >&2; exit 2; }
export STATION_TEST_PG=1
exec pg_virtualenv -t "$root/.venv/bin/pytest" tests/audit -q "$@"
