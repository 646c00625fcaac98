#!/usr/bin/env bash
# Runs the isolation specs (extension/test/specs/*.spec) with PostgreSQL's
# pg_isolation_regress against the server the libpq environment points at
# (PGHOST, PGPORT, PGUSER; `make test` provides a throwaway cluster).
#
#   extension/test/run-isolation.sh [SPEC ...]     default: every spec
#
# A fresh database (PGFLOW_ISOLATION_DB, default pgflow_isolation) gets
# CREATE EXTENSION pgflow (the extension must be installed: make install);
# every spec then sets up and tears down its own flows.  On failure the diff
# against extension/test/expected/ is printed and the exit status is 1.  With
# PGFLOW_ISOLATION_OUT=DIR the results are kept in DIR/results/ (to review
# them before copying a new expected output).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pg_config=${PG_CONFIG:-pg_config}
regress="$(dirname "$("$pg_config" --pgxs)")/../test/isolation/pg_isolation_regress"
db=${PGFLOW_ISOLATION_DB:-pgflow_isolation}

if [ ! -x "$regress" ]; then
    echo "run-isolation.sh: $regress not found (install the PostgreSQL server development files)" >&2
    exit 1
fi

if [ -n "${PGFLOW_ISOLATION_OUT:-}" ]; then
    out=$PGFLOW_ISOLATION_OUT
    mkdir -p "$out"
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

if [ $# -gt 0 ]; then
    specs=("$@")
else
    specs=()
    for f in "$here"/specs/*.spec; do
        specs+=("$(basename "$f" .spec)")
    done
fi

export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
psql -qX -v ON_ERROR_STOP=1 -d postgres \
    -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\"" >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d "$db" -c 'CREATE EXTENSION pgflow' >/dev/null
unset PGOPTIONS

status=0
"$regress" --use-existing --dbname="$db" --bindir="$("$pg_config" --bindir)" \
    --inputdir="$here" --outputdir="$out" "${specs[@]}" || status=$?
if [ "$status" -ne 0 ]; then
    if [ -f "$out/regression.diffs" ]; then
        cat "$out/regression.diffs"
    fi
    echo "run-isolation.sh: isolation specs failed (database $db kept for inspection)" >&2
    exit 1
fi
psql -qX -d postgres -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null
