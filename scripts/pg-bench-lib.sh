# Shared by the PostgreSQL benchmarks (sourced): a fresh database per run on the server at
# $1, and PostgreSQL's processes pinned to core 0 for the run (the server under test and its
# database share one core; the load tool has the other), restored afterwards.

pg_bench_database() {
  local server=$1
  BENCH_DB_NAME="bak_bench_$$"
  local base=${server%/*}
  BENCH_ADMIN_URL=$server
  BENCH_DB_URL="$base/$BENCH_DB_NAME"
  psql -q "$BENCH_ADMIN_URL" -c "DROP DATABASE IF EXISTS $BENCH_DB_NAME WITH (FORCE)" -c "CREATE DATABASE $BENCH_DB_NAME"
  BENCH_PG_PIDS=$(pgrep -f -u postgres 'postgres' | tr '\n' ' ')
  for p in $BENCH_PG_PIDS; do taskset -acp 0 "$p" >/dev/null 2>&1 || true; done
}

pg_bench_cleanup() {
  for p in $(pgrep -f -u postgres 'postgres'); do taskset -acp 0-$(( $(nproc) - 1 )) "$p" >/dev/null 2>&1 || true; done
  psql -q "$BENCH_ADMIN_URL" -c "DROP DATABASE IF EXISTS $BENCH_DB_NAME WITH (FORCE)" || true
}

# The benchmark scripts' DATABASE=postgres://… option: a fresh database on that server for the
# run, BAKEND_DATABASE pointing at it, PostgreSQL on core 0, and pg_cleanup=1 for the EXIT trap
# (which then calls pg_bench_cleanup). Without DATABASE: nothing (SQLite).
pg_bench_from_env() {
  pg_cleanup=
  if [[ -n "${DATABASE:-}" ]]; then
    pg_bench_database "$DATABASE"
    export BAKEND_DATABASE=$BENCH_DB_URL
    pg_cleanup=1
  fi
}
