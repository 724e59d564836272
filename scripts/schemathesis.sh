#!/usr/bin/env bash
# Runs schemathesis (https://schemathesis.readthedocs.io) against a real `bak` serving its own
# `GET /api/openapi.json`: no 500s, every response's status, content type, headers and body as
# documented. Bounded: each pass stops after MAX_TIME seconds or MAX_EXAMPLES cases per
# operation, whichever comes first. See docs/openapi.md.
#
# Usage: scripts/schemathesis.sh
#   MAX_TIME=60       seconds per pass (passes: signed-in user, admin, anonymous, admin-users)
#   MAX_EXAMPLES=25   generated cases per operation and pass
#   SEED=1            hypothesis seed, so a run can be repeated
#   DETERMINISTIC=1   the same cases every run, bounded by MAX_EXAMPLES only (no time bound,
#                     no stateful phase, one worker); what .ci/run uses
#   BAK=path/to/bak   a built binary (default: `cargo build -p bak`, debug)
#   SCHEMATHESIS=path a schemathesis executable (default: on PATH, else a venv in
#                     $ST_VENV, default /tmp/bakend-schemathesis, created with pip;
#                     ST_VERSION=4.32.5 is the version installed there)
#   PORT=18190
#   CHECKS=…          schemathesis checks (default: the five below; `all` adds stricter ones)
#   PHASES=…          default examples,coverage,fuzzing,stateful
#   ST_ARGS="…"       more arguments for every pass
#   PASSES="user admin anonymous admin-users"  which passes to run
#   KEEP=1            keep the project folder (server log, reports) even when all passed
# Exit status: 0 when every pass found nothing, 1 otherwise. The server's log and the reports
# are kept in the printed folder when a pass fails.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_TIME=${MAX_TIME:-60}
MAX_EXAMPLES=${MAX_EXAMPLES:-25}
SEED=${SEED:-1}
PORT=${PORT:-18190}
url="http://127.0.0.1:$PORT"

if [ -z "${SCHEMATHESIS:-}" ]; then
  if command -v schemathesis >/dev/null 2>&1; then
    SCHEMATHESIS=$(command -v schemathesis)
  else
    venv=${ST_VENV:-/tmp/bakend-schemathesis}
    if [ ! -x "$venv/bin/schemathesis" ]; then
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q "schemathesis==${ST_VERSION:-4.32.5}"
    fi
    SCHEMATHESIS="$venv/bin/schemathesis"
  fi
fi
SCHEMATHESIS=$(realpath "$SCHEMATHESIS")
if [ -z "${BAK:-}" ]; then
  cargo build -q -p bak
  BAK=target/debug/bak
fi
BAK=$(realpath "$BAK")

dir=$(mktemp -d /tmp/bakend-schemathesis.XXXXXX)
server=
cleanup() {
  if [ -n "$server" ]; then kill -INT "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
}
trap cleanup EXIT

# A project with every field type, an owner-permission collection with a file field, and an
# admin-only one. Login rate limiting is off: schemathesis registers and signs in a lot.
mkdir -p "$dir/collections"
cat > "$dir/bakend.json" <<JSON
{"port": $PORT, "logLevel": "WARN", "auth": {"rateLimit": {"attempts": 0}}}
JSON
cat > "$dir/collections/notes.json" <<'JSON'
{
  "name": "notes",
  "fields": [
    {"name": "title", "type": "string", "required": true, "min": 1, "max": 80},
    {"name": "body", "type": "text", "max": 2000},
    {"name": "slug", "type": "string", "unique": true, "regex": "^[a-z0-9-]+$"},
    {"name": "views", "type": "integer", "min": 0, "max": 1000000, "default": 0},
    {"name": "score", "type": "float", "min": -1, "max": 1},
    {"name": "published", "type": "boolean"},
    {"name": "due", "type": "datetime"},
    {"name": "meta", "type": "json"},
    {"name": "author", "type": "relation", "collection": "users"},
    {"name": "cover", "type": "file"}
  ],
  "permissions": {"create": "public", "read": "public", "update": "public", "delete": "public"}
}
JSON
cat > "$dir/collections/tasks.json" <<'JSON'
{
  "name": "tasks",
  "fields": [
    {"name": "title", "type": "string", "required": true, "max": 200},
    {"name": "done", "type": "boolean", "required": true, "default": false},
    {"name": "note", "type": "relation", "collection": "notes"},
    {"name": "attachment", "type": "file"},
    {"name": "user_id", "type": "relation", "collection": "users"}
  ],
  "permissions": {"create": "authenticated", "read": "owner", "update": "owner", "delete": "owner"}
}
JSON
cat > "$dir/collections/audit.json" <<'JSON'
{
  "name": "audit",
  "fields": [{"name": "entry", "type": "text", "required": true}],
  "permissions": {"create": "admin", "read": "admin", "update": "admin", "delete": "admin"}
}
JSON

echo "password123" | "$BAK" admin create admin@example.com --password-stdin --config "$dir/bakend.json" >/dev/null
(cd "$dir" && exec "$BAK" start --config "$dir/bakend.json" >"$dir/server.out" 2>"$dir/server.err") &
server=$!
for _ in $(seq 1 100); do
  curl -fs "$url/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$url/health" >/dev/null || { echo "bak did not start; see $dir/server.err" >&2; exit 1; }

token_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'; }
user=$(curl -fs -X POST "$url/api/auth/register" -H 'content-type: application/json' \
  -d '{"email":"user@example.com","password":"password123"}' | token_of)
admin=$(curl -fs -X POST "$url/api/auth/login" -H 'content-type: application/json' \
  -d '{"email":"admin@example.com","password":"password123"}' | token_of)
# Something to find: a file and a record of each kind.
curl -fs -X POST "$url/api/storage/upload" -H "authorization: Bearer $user" \
  -F file=@README.md -F visibility=public >/dev/null
curl -fs -X POST "$url/api/notes" -H 'content-type: application/json' -d '{"title":"hello"}' >/dev/null
curl -fs -X POST "$url/api/tasks" -H "authorization: Bearer $user" -H 'content-type: application/json' \
  -d '{"title":"first"}' >/dev/null

checks=${CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}
# The anonymous pass stays anonymous: schemathesis would otherwise find register/login in the
# document and sign itself up.
printf '[auth]\nauto-signup = false\n' > "$dir/schemathesis.toml"
status=0
if [ "${DETERMINISTIC:-0}" = 1 ]; then
  # The same cases every run (no time bound, one worker, no example database): for CI.
  bound=(--generation-deterministic --workers 1)
  PHASES=${PHASES:-examples,coverage,fuzzing}
else
  bound=(--max-time "$MAX_TIME" --seed "$SEED" --workers 2)
fi
pass() {
  local name=$1; shift
  echo "=== schemathesis pass: $name"
  local start=$SECONDS
  # Run from the project folder: schemathesis keeps its cache in the working directory.
  (cd "$dir" && "$SCHEMATHESIS" --config-file "$dir/schemathesis.toml" run "$url/api/openapi.json" \
    --checks "$checks" --max-examples "$MAX_EXAMPLES" "${bound[@]}" \
    --phases "${PHASES:-examples,coverage,fuzzing,stateful}" --request-timeout 10 \
    --report junit --report-dir "$dir/report-$name" ${ST_ARGS:-} "$@") || status=1
  echo "=== $name: $((SECONDS - start)) s"
}
# Logout ends every session of a signed-in caller ({"all": true}), so it runs anonymously only.
for p in ${PASSES:-user admin anonymous admin-users}; do
  case $p in
    user) pass user -H "Authorization: Bearer $user" --exclude-path-regex '^/api/(admin|auth/logout)' ;;
    # Changing or deleting users can demote or delete the signed-in admin (stateful runs promote
    # a user, then delete the first admin), so those two run last, on their own.
    admin) pass admin -H "Authorization: Bearer $admin" --include-path-regex '^/api/admin/' \
             --exclude-path-regex '^/api/admin/users/' ;;
    admin-users) pass admin-users -H "Authorization: Bearer $admin" --include-path-regex '^/api/admin/users' ;;
    anonymous) pass anonymous ;;
    *) echo "unknown pass $p" >&2; exit 2 ;;
  esac
done

cleanup
server=
if grep -q "panicked" "$dir/server.err"; then
  echo "the server logged a panic:" >&2; grep -A3 "panicked" "$dir/server.err" >&2; status=1
fi
if [ "$status" = 0 ] && [ "${KEEP:-0}" != 1 ]; then
  rm -rf "$dir"
  echo "schemathesis: no failures"
else
  echo "schemathesis found failures; server log and reports in $dir" >&2
fi
exit "$status"
