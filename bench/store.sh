#!/usr/bin/env bash
# The native store at scale: import a reproducible corpus, then search it.
# Each figure is printed beside a baseline run on the same corpus, on the
# same machine, in the same run:
#   import  vs. a naive archiver: Python's mailbox copying the same mbox
#           files into a Maildir (no index, no compression, no fsync);
#   stored  vs. `zstd -3` of the whole corpus as one stream (best case for a
#           compressor with no per-message overhead, no dedup);
#   search  vs. `grep -rliF WORD` over the corpus (what you do without an
#           index), for the single-word queries.
#
# Usage: bench/store.sh [MESSAGES] [SEED]      (default 100000 1)
# The corpus is cached in ${BENCH_CACHE:-/tmp/mailkeep-bench}. Prints a
# Markdown table; BENCHMARKS.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
SEED=${2:-1}
CACHE=${BENCH_CACHE:-/tmp/mailkeep-bench}
CORPUS=$CACHE/corpus-$N-$SEED
QUERIES=bench/store_queries.txt

cargo build --release --quiet
BIN=$PWD/target/release/mailkeep
if [ ! -f "$CORPUS/.done" ]; then
  rm -rf "$CORPUS"
  mkdir -p "$CORPUS"
  python3 bench/gen_store_corpus.py --out "$CORPUS" --messages "$N" --seed "$SEED" >&2
  touch "$CORPUS/.done"
fi
WORK=$(mktemp -d "$CACHE/run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/spool"
cat > "$WORK/mailkeep.toml" <<TOML
[spool]
dir = "$WORK/spool"

[store]
path = "$WORK/store"
TOML

python3 - "$BIN" "$WORK" "$CORPUS" "$QUERIES" "$N" <<'PY'
import json, os, resource, statistics, subprocess, sys, time, mailbox, shlex

bin_, work, corpus, queries, n = sys.argv[1:6]
cfg = os.path.join(work, "mailkeep.toml")
mboxes = sorted(os.path.join(corpus, f) for f in os.listdir(corpus) if f.endswith(".mbox"))
raw_bytes = sum(os.path.getsize(f) for f in mboxes)

def drop_caches_hint():
    # Not dropped (needs root and disturbs the machine); both sides read
    # the corpus after it was just written or read, so both see a warm cache.
    pass

def run(cmd, **kw):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, **kw)
    return time.perf_counter() - t, p

# --- import ---------------------------------------------------------------
before = resource.getrusage(resource.RUSAGE_CHILDREN)
secs, p = run([bin_, "-c", cfg, "import", "--json", corpus])
after = resource.getrusage(resource.RUSAGE_CHILDREN)
if p.returncode != 0:
    sys.exit("import failed: %s %s" % (p.stdout.decode(), p.stderr.decode()))
imp = json.loads(p.stdout)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
peak_mib = after.ru_maxrss / 1024
copies = imp["messages"]

# Re-import: must add nothing.
re_secs, p = run([bin_, "-c", cfg, "import", "--json", corpus])
reimp = json.loads(p.stdout)

# Baseline: Python's mailbox, mbox -> Maildir, no index.
base_dir = os.path.join(work, "maildir")
t = time.perf_counter()
md = mailbox.Maildir(base_dir, create=True)
count = 0
for f in mboxes:
    for m in mailbox.mbox(f, create=False):
        md.add(m)
        count += 1
base_secs = time.perf_counter() - t

stats = json.loads(subprocess.run([bin_, "-c", cfg, "stats", "--json"], capture_output=True).stdout)
store_disk = stats["stored_bytes"] + stats["catalog_bytes"]

# Baseline: zstd -3 of the whole corpus.
t = time.perf_counter()
zs = subprocess.run("cat %s | zstd -3 -T1 -q -c | wc -c" % " ".join(shlex.quote(f) for f in mboxes),
                    shell=True, capture_output=True, check=True)
zstd_bytes = int(zs.stdout)
zstd_secs = time.perf_counter() - t

# --- search ---------------------------------------------------------------
qs = [l.rstrip("\n") for l in open(queries) if l.strip() and not l.startswith("#")]
samples, per_query, hits_total, empty = [], {}, 0, 0
for rep in range(5):
    for q in qs:
        s, p = run([bin_, "-c", cfg, "search", "--json", "--limit", "50", q])
        if p.returncode not in (0, 1):
            sys.exit("search %r failed: %s" % (q, p.stderr.decode()))
        samples.append(s * 1000)
        per_query.setdefault(q, []).append(s * 1000)
        if rep == 0:
            k = len(p.stdout.splitlines())
            hits_total += k
            empty += k == 0
# The floor: a process that opens the store and finds nothing.
floor = []
for _ in range(20):
    s, _p = run([bin_, "-c", cfg, "search", "--limit", "1", "id:999999999999"])
    floor.append(s * 1000)
grep_samples = []
words = [q for q in qs if q.isalpha()][:8]
for w in words:
    s, _p = run(["grep", "-rliF", w, corpus])
    grep_samples.append(s * 1000)

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]

slowest = sorted(per_query.items(), key=lambda kv: -statistics.median(kv[1]))[:3]
nproc = os.cpu_count()
print("### bench/store.sh %s messages (corpus seed %s), %d cores\n" % (n, sys.argv[5] and n and os.path.basename(corpus).split("-")[-1], nproc))
print("| figure | mailkeep store | baseline | ratio |")
print("| --- | --- | --- | --- |")
print("| import: stored copies read | %d (%.1f MB) | %d | |" % (copies, raw_bytes / 1e6, count))
print("| import: new deliveries / distinct messages | %d / %d | | |" % (imp["new_deliveries"], imp["new_messages"]))
print("| import rate, msg/s (wall) | %.0f | %.0f (Python mailbox → Maildir, no index) | %.2f× |"
      % (copies / secs, count / base_secs, (copies / secs) / (count / base_secs)))
print("| import rate, MB/s | %.1f | %.1f | |" % (raw_bytes / 1e6 / secs, raw_bytes / 1e6 / base_secs))
print("| import CPU s per 1,000 msg | %.3f | | |" % (cpu * 1000 / copies))
print("| import peak RSS | %.0f MiB | | |" % peak_mib)
print("| re-import: new deliveries (must be 0) | %d in %.1f s | | |" % (reimp["new_deliveries"], re_secs))
print("| stored (segments + catalog + index) / raw corpus | %.3f (%.1f MB) | %.3f (zstd -3 of the corpus, %.1f MB) | |"
      % (store_disk / raw_bytes, store_disk / 1e6, zstd_bytes / raw_bytes, zstd_bytes / 1e6))
print("| segments only / raw corpus | %.3f | | |" % (stats["stored_bytes"] / raw_bytes))
print("| search p50 / p99, ms (%d runs of %d queries, whole process) | %.1f / %.1f | %.1f / %.1f (grep -rliF, %d words) | %.3f× (p50) |"
      % (len(samples) // len(qs), len(qs), pct(samples, 50), pct(samples, 99), pct(grep_samples, 50), pct(grep_samples, 99), len(words),
         pct(samples, 50) / max(pct(grep_samples, 50), 1e-9)))
print("| search floor: start, open, empty lookup, ms (p50) | %.1f | | |" % pct(floor, 50))
print("| queries with no result (first run) | %d of %d | | |" % (empty, len(qs)))
print("\nslowest queries (median ms): " + "; ".join("`%s` %.1f" % (q, statistics.median(v)) for q, v in slowest))
print("\ncommand: `bench/store.sh %s`; corpus: `bench/gen_store_corpus.py --messages %s`" % (n, n))
PY
