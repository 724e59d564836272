#!/usr/bin/env bash
# The reference for `bak` creates on PostgreSQL (issue 17): pgbench running, per transaction,
# what one REST create makes PostgreSQL do — the record INSERT, the row-count update its
# trigger makes, and the journal INSERT — with 32 clients on core 1 (`-j 1`), PostgreSQL on
# core 0, in a fresh database. Compare with `DATABASE=… scripts/bench-rest-create.sh 32 10 3`.
# The journal seq comes from a sequence (what a naive implementation would do: fast, but a
# reader can see seq N+1 committed before N). SEQ=lock takes it as `bak` does instead — under
# the journal's advisory lock with the last seq recorded — which, one create per transaction,
# serializes every commit's fsync (`bak` amortizes that lock over a group commit).
# COUNTS=off leaves out the row-count update: exactly the issue's reference (one record INSERT
# and one journal INSERT per transaction), which no counter row serializes.
# Usage: scripts/bench-pgbench-create.sh postgres://postgres@127.0.0.1:5432/postgres [duration=10]
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:?usage: scripts/bench-pgbench-create.sh SERVER_URL [duration]}
duration=${2:-10}
source scripts/pg-bench-lib.sh
pg_bench_database "$server"
trap pg_bench_cleanup EXIT
psql -q "$BENCH_DB_URL" <<'SQL'
CREATE TABLE bench (id TEXT COLLATE "C" PRIMARY KEY, created_at TEXT COLLATE "C" NOT NULL,
  updated_at TEXT COLLATE "C" NOT NULL, title TEXT COLLATE "C" NOT NULL, n BIGINT);
CREATE INDEX idx_bench_created ON bench (created_at, id);
CREATE TABLE _record_counts (collection TEXT COLLATE "C" PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO _record_counts VALUES ('bench', 0);
CREATE TABLE _bakend_meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL, created_at TEXT NOT NULL);
INSERT INTO _bakend_meta VALUES ('journal_last_seq', '0', '');
CREATE SEQUENCE journal_seq;
CREATE TABLE _events_0 (seq BIGINT PRIMARY KEY, type TEXT NOT NULL, subject TEXT, record TEXT,
  envelope TEXT NOT NULL, created_ms BIGINT NOT NULL, previous TEXT);
SQL
envelope='{"id":"evt_0123456789abcdef","type":"bench.created","source":"collections","timestamp":"2026-12-04T00:00:00.000Z","payload":{"id":"rec_0123456789abcdef","createdAt":"2026-12-04T00:00:00.000Z","updatedAt":"2026-12-04T00:00:00.000Z","title":"title","n":1},"seq":1}'
if [[ "${SEQ:-sequence}" != lock ]]; then
cat > "/tmp/pgbench-create-$$.sql" <<SQL
\set n random(1, 1000000000)
BEGIN;
INSERT INTO bench VALUES (md5(random()::text), now()::text, now()::text, 'title ' || :n, :n);
UPDATE _record_counts SET n = n + 1 WHERE collection = 'bench';
INSERT INTO _events_0 VALUES (nextval('journal_seq'), 'bench.created', NULL, md5(random()::text), '$envelope', 0, NULL);
COMMIT;
SQL
else
cat > "/tmp/pgbench-create-$$.sql" <<'SQL'
\set n random(1, 1000000000)
BEGIN;
INSERT INTO bench VALUES (md5(random()::text), now()::text, now()::text, 'title ' || :n, :n);
UPDATE _record_counts SET n = n + 1 WHERE collection = 'bench';
SELECT pg_advisory_xact_lock(42);
INSERT INTO _events_0 SELECT value::bigint + 1, 'bench.created', NULL, md5(random()::text),
  '{"id":"evt_0123456789abcdef","type":"bench.created","source":"collections","timestamp":"2026-12-04T00:00:00.000Z","payload":{"id":"rec_0123456789abcdef","createdAt":"2026-12-04T00:00:00.000Z","updatedAt":"2026-12-04T00:00:00.000Z","title":"title","n":1},"seq":1}',
  0, NULL FROM _bakend_meta WHERE key = 'journal_last_seq';
UPDATE _bakend_meta SET value = (value::bigint + 1)::text WHERE key = 'journal_last_seq';
COMMIT;
SQL
fi
if [[ "${COUNTS:-on}" == off ]]; then
  sed -i '/UPDATE _record_counts/d' "/tmp/pgbench-create-$$.sql"
fi
taskset -c 1 pgbench -n -c 32 -j 1 -T "$duration" -f "/tmp/pgbench-create-$$.sql" "$BENCH_DB_URL"
rm -f "/tmp/pgbench-create-$$.sql"
