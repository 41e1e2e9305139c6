#!/usr/bin/env bash
# The web interface under load: the search API and the search page with 20
# concurrent logged-in users (wrk, one connection each) on a store of
# bench/gen_store_corpus.py's corpus, beside the CLI search on the same store
# and the same queries (one `mailkeep search` process per query, in turn).
#
# Measured for a *user* (alice: every search is limited to her own mail by
# the envelope, which is what the access rule costs) and an *auditor* (no
# limit). Every request is a real search, recorded in the audit log (fsync)
# before it is answered, as in production.
#
# Usage: bench/web.sh [MESSAGES] [SECONDS]      (default 100000 20)
# Needs wrk (apt-get install wrk). The corpus and its imported store are
# cached in ${BENCH_CACHE:-/tmp/mailkeep-bench} (the run's accounts and
# audit log are not). Prints a Markdown table; BENCHMARKS.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
SECS=${2:-20}
CACHE=${BENCH_CACHE:-/tmp/mailkeep-bench}
CORPUS=$CACHE/corpus-$N-1
STORE=$CACHE/web-store-$N-1
QUERIES=$PWD/bench/store_queries.txt
command -v wrk >/dev/null || { echo "bench/web.sh: needs wrk (apt-get install wrk)" >&2; exit 69; }

cargo build --release --quiet
BIN=$PWD/target/release/mailkeep
if [ ! -f "$CORPUS/.done" ]; then
  rm -rf "$CORPUS"
  mkdir -p "$CORPUS"
  python3 bench/gen_store_corpus.py --out "$CORPUS" --messages "$N" --seed 1 >&2
  touch "$CORPUS/.done"
fi
WORK=$(mktemp -d "$CACHE/web.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
  [ -f "$WORK/serve.pid" ] && kill "$(cat "$WORK/serve.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/spool"
cat > "$WORK/mailkeep.toml" <<TOML
[spool]
dir = "$WORK/spool"

[store]
path = "$STORE"
audit_log = "$WORK/audit.log"

[web]
listen = "127.0.0.1:$PORT"
users_file = "$WORK/users.json"
TOML
M="$BIN -c $WORK/mailkeep.toml"
if [ ! -f "$STORE/.imported" ]; then
  echo "importing $N messages ..." >&2
  rm -rf "$STORE"
  $M import "$CORPUS"/*.mbox >/dev/null
  touch "$STORE/.imported"
fi
printf 'a long benchmark passphrase\n' > "$WORK/pw"
$M user add alice --role user --password-file "$WORK/pw" --address alice@example.com >/dev/null
$M user add auditor --role auditor --password-file "$WORK/pw" >/dev/null
$M serve --pidfile "$WORK/serve.pid" >"$WORK/serve.log" 2>&1 &
for _ in $(seq 100); do [ -s "$WORK/serve.pid" ] && break; sleep 0.1; done
[ -s "$WORK/serve.pid" ] || { cat "$WORK/serve.log" >&2; exit 70; }
BASE=http://127.0.0.1:$PORT
# A store imported before conversations were kept gets their links read by
# serve in the background: measured here, and waited for, so it is not
# part of the loads.
LINK_START=$(date +%s.%N)
UNLINKED=$($M stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["unlinked_messages"])')
if [ "$UNLINKED" -gt 0 ]; then
  echo "serve is reading the conversation links of $UNLINKED older messages ..." >&2
  until [ "$($M stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["unlinked_messages"])')" = 0 ]; do sleep 1; done
  echo "conversation links of $UNLINKED messages read in $(python3 -c "import time; print(round(time.time() - $LINK_START, 1))") s" >&2
fi

cookie() {
  curl -s -D - -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"user\": \"$1\", \"password\": \"a long benchmark passphrase\"}" "$BASE/api/session" |
    sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p'
}

cat > "$WORK/search.lua" <<'LUA'
-- Each request: the next query of the list, URL-encoded, under PREFIX.
local queries = {}
for line in io.lines(os.getenv("QUERIES")) do
  if line ~= "" then table.insert(queries, line) end
end
local prefix = os.getenv("PREFIX")
-- THINK ms on average between a connection's requests (a user reading the
-- results), drawn uniformly from half to one and a half times it so the
-- users do not move in step.
local think = tonumber(os.getenv("THINK") or "0")
if think > 0 then
  delay = function() return math.random(math.floor(think / 2), think + math.floor(think / 2)) end
end
local cookie = os.getenv("COOKIE")
local n = 0
local function enc(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end
request = function()
  n = n + 1
  local q = queries[(n % #queries) + 1]
  return wrk.format("GET", prefix .. enc(q), { ["Cookie"] = cookie })
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.3f %.3f %.3f\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.duration / 1e6))
end
LUA

load() { # WHO PREFIX THINK_MS -> "requests errors p50ms p99ms seconds"
  local c
  c=$(cookie "$1")
  [ -n "$c" ] || { echo "login as $1 failed" >&2; exit 70; }
  # A first request proves the session works (and warms the cache).
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $c" "$BASE${2}invoice")
  [ "$code" = 200 ] || { echo "GET ${2}invoice as $1: $code" >&2; exit 70; }
  THINK=$3 QUERIES=$QUERIES PREFIX=$2 COOKIE=$c wrk -t2 -c20 -d"${SECS}s" --timeout 10s -s "$WORK/search.lua" "$BASE" |
    sed -n 's/^RESULT //p'
}

if [ -n "${PROBE:-}" ]; then
  # One request at a time, per query: where the time goes. PROBE_PATHS
  # (space-separated) compares endpoints, e.g. the API with and without
  # facets and snippets, and the page ("/?").
  for path in ${PROBE_PATHS:-/api/search?limit=50}; do
    for who in alice auditor; do
      c=$(cookie "$who")
      while IFS= read -r q; do
        [ -n "$q" ] || continue
        t=$(curl -s -o /dev/null -w '%{time_total}' -H "Cookie: $c" -G --data-urlencode "q=$q" "$BASE$path")
        printf '%s\t%s\t%6.1f ms\t%s\n' "$path" "$who" "$(python3 -c "print($t*1000)")" "$q"
      done < "$QUERIES"
    done
  done | tee "$WORK/probe.tsv"
  python3 - "$WORK/probe.tsv" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    path, who, ms, _ = line.rstrip("\n").split("\t", 3)
    rows[(path, who)].append(float(ms.split()[0]))
print("\n| endpoint | reader | median ms | max ms |\n| --- | --- | ---: | ---: |")
for (path, who), t in rows.items():
    print("| `%s` | %s | %.1f | %.1f |" % (path, who, statistics.median(t), max(t)))
PY
  exit 0
fi

# Two loads of 20 users each: every user searching again as soon as the
# answer is in (the server saturated: latency is the queue), and every
# user searching once a second on average (think time 0.5 to 1.5 s; people
# read results for longer than that, so this is still a heavy load).
echo "loading: API as alice, API as the auditor, page as alice (${SECS} s each, 20 connections, no think time, then 0.5-1.5 s) ..." >&2
API_USER=$(load alice "/api/search?limit=50&q=" 0)
API_AUDITOR=$(load auditor "/api/search?limit=50&q=" 0)
PAGE_USER=$(load alice "/?q=" 0)
API_USER_1=$(load alice "/api/search?limit=50&q=" 1000)
API_AUDITOR_1=$(load auditor "/api/search?limit=50&q=" 1000)
PAGE_USER_1=$(load alice "/?q=" 1000)

echo "baseline: mailkeep search, one process per query, the same queries ..." >&2
CLI=$(python3 - "$BIN" "$WORK/mailkeep.toml" "$QUERIES" <<'PY'
import statistics, subprocess, sys, time
bin_, cfg, qfile = sys.argv[1:4]
qs = [l.rstrip("\n") for l in open(qfile) if l.strip()]
times = []
for _ in range(5):
    for q in qs:
        t = time.perf_counter()
        subprocess.run([bin_, "-c", cfg, "search", "--limit", "50", "--json", "--", q],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
times.sort()
print("%d %.3f %.3f" % (len(times), statistics.median(times), times[int(len(times) * 0.99) - 1]))
PY
)
ENTRIES=$(wc -l < "$WORK/audit.log")

python3 - "$N" "$SECS" "$API_USER" "$API_AUDITOR" "$PAGE_USER" "$CLI" "$ENTRIES" \
  "$API_USER_1" "$API_AUDITOR_1" "$PAGE_USER_1" <<'PY'
import sys
n, secs, api_user, api_aud, page_user, cli, entries, api_user_1, api_aud_1, page_user_1 = sys.argv[1:11]
def row(name, r):
    req, err, p50, p99, dur = r.split()
    rate = int(req) / float(dur)
    return "| %s | %s | %.1f | %.1f | %.0f | %s |" % (name, req, float(p50), float(p99), rate, err)
print("### bench/web.sh: %s messages, 20 concurrent users, %s s per load, 2 cores\n" % (n, secs))
print("| load | requests | p50 ms | p99 ms | requests/s | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
print(row("`GET /api/search` as a user (limited by the envelope), 0.5-1.5 s think time", api_user_1))
print(row("`GET /api/search` as an auditor, 0.5-1.5 s think time", api_aud_1))
print(row("`GET /?q=` (the search page) as a user, 0.5-1.5 s think time", page_user_1))
print(row("`GET /api/search` as a user, no think time (saturated)", api_user))
print(row("`GET /api/search` as an auditor, no think time (saturated)", api_aud))
print(row("`GET /?q=` as a user, no think time (saturated)", page_user))
k, p50, p99 = cli.split()
print("| baseline: `mailkeep search --limit 50`, one process per query, in turn | %s | %.1f | %.1f | %.0f | 0 |" % (k, float(p50), float(p99), 1000 / float(p50)))
print("\nTarget: p50 <= 50 ms, p99 <= 200 ms. The audit log holds %s entries afterwards (one per search)." % entries.strip())
PY
