#!/usr/bin/env bash
# A wrong-password login flood and the server's memory, as BENCHMARKS.md reports it: release
# build, server pinned to core 0, load tool to core 1, a fresh project. Prints the server's
# resident memory before, its peak (VmHWM) and what it holds 5 s after the flood.
# Usage: scripts/bench-login-flood.sh [CLIENTS] [SECONDS] [extra auth config JSON members]
#   e.g. scripts/bench-login-flood.sh 400 10
#        scripts/bench-login-flood.sh 400 10 '"maxConcurrentHashes":4'
# BAK_BIN / BENCH_BIN pick other binaries (an A/B against an older build).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-400}
seconds=${2:-10}
extra=${3:-}
port=${PORT:-18091}

[[ -n "${BAK_BIN:-}" && -n "${BENCH_BIN:-}" ]] || cargo build --release -q -p bak -p bakend-bench
bak=${BAK_BIN:-$PWD/target/release/bak}
bench=${BENCH_BIN:-$PWD/target/release/bakend-bench}
dir=$(mktemp -d /tmp/bakend-login.XXXXXX)
trap 'kill -INT $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/collections"
echo '{"auth":{"rateLimit":{"attempts":0}'"${extra:+,$extra}"'}}' > "$dir/bakend.json"
(cd "$dir" && exec taskset -c 0 "$bak" start --port "$port" >"$dir/server.out" 2>"$dir/server.err") &
server=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
rss() { awk -v k="$1:" '$1 == k { printf "%.1f MiB", $2 / 1024 }' "/proc/$server/status"; }
echo "before: $(rss VmRSS)"
taskset -c 1 "$bench" rest-login --wrong-password --url "http://127.0.0.1:$port" \
  --clients "$clients" --duration "$seconds" --warmup 1
echo "peak (VmHWM): $(rss VmHWM)"
echo "right after: $(rss VmRSS)"
sleep 5
echo "5 s later: $(rss VmRSS)"
curl -fs -o /dev/null -w "health: %{http_code} in %{time_total} s\n" "http://127.0.0.1:$port/health"
