#!/usr/bin/env bash
# Expiry at scale: the bench corpus (bench/gen_store_corpus.py) dated over
# 2023-01 .. 2025-06, imported with its envelope blocks (so each delivery
# keeps its receive time), then `mailkeep expire` under `default = "2y"`:
#   expiry rate   deliveries removed per second (removal + compaction),
#   compaction    segment bytes rewritten per second,
#   space         store size before and after (segments + catalog),
#   ingest        `mailkeep import` of a second corpus while an expiry runs
#                 on the same store, against the same import into an
#                 identical copy of the store with nothing else running
#                 (side by side in one run; target >= 0.8x).
# `mailkeep verify` must pass afterwards and name every removal (that the
# removed bytes are in no file is what the store's tests grep for).
#
# Usage: bench/lifecycle.sh [MESSAGES]      (default 20000)
# The corpora are cached in ${BENCH_CACHE:-/tmp/mailkeep-bench}.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
CACHE=${BENCH_CACHE:-/tmp/mailkeep-bench}
CORPUS=$CACHE/lifecycle-$N
EXTRA=$CACHE/lifecycle-extra-$((N / 10))
cargo build --release --quiet
BIN=$PWD/target/release/mailkeep
for spec in "$CORPUS $N 1 2023-01-01 2025-06-30" "$EXTRA $((N / 10)) 2 2026-11-01 2026-11-30"; do
  read -r dir n seed start end <<<"$spec"
  if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    python3 bench/gen_store_corpus.py --out "$dir" --messages "$n" --seed "$seed" --start "$start" --end "$end" >&2
    touch "$dir/.done"
  fi
done
WORK=$(mktemp -d "$CACHE/lifecycle-run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

python3 - "$BIN" "$WORK" "$CORPUS" "$EXTRA" "$N" <<'PY'
import json, os, shutil, subprocess, sys, threading, time

bin_, work, corpus, extra, n = sys.argv[1:6]

def config(name):
    d = os.path.join(work, name)
    os.makedirs(os.path.join(d, "spool"), exist_ok=True)
    path = os.path.join(d, "mailkeep.toml")
    open(path, "w").write(
        f'[spool]\ndir = "{d}/spool"\n\n[store]\npath = "{d}/store"\n\n'
        '[retention]\ndefault = "2y"\n'
    )
    return path, os.path.join(d, "store")

def run(cfg, *args):
    t = time.perf_counter()
    p = subprocess.run([bin_, "-c", cfg, *args], capture_output=True)
    if p.returncode != 0:
        sys.exit(f"{args}: exit {p.returncode}: {p.stderr.decode()}")
    return time.perf_counter() - t, p.stdout.decode()

def size(store):
    total = 0
    for root, _, files in os.walk(store):
        for f in files:
            if f != "audit.log":
                total += os.path.getsize(os.path.join(root, f))
    return total

def segments(store):
    seg = os.path.join(store, "segments")
    return sum(os.path.getsize(os.path.join(seg, f)) for f in os.listdir(seg))

cfg_a, store_a = config("a")
secs, out = run(cfg_a, "import", "--json", corpus)
imported = json.loads(out)
# An identical copy for the ingest baseline.
cfg_b, store_b = config("b")
shutil.copytree(store_a, store_b, dirs_exist_ok=True)
_, plan = run(cfg_a, "retention", "plan", "--json")
plan = json.loads(plan)
before, seg_before = size(store_a), segments(store_a)

# Baseline: the second corpus into the copy, nothing else running.
base_secs, _ = run(cfg_b, "import", "--json", extra)

# Expiry on the first store, the same import alongside it.
result = {}
def expire():
    result["secs"], result["out"] = run(cfg_a, "expire", "--json")
t = threading.Thread(target=expire)
t.start()
time.sleep(0.2)
busy_secs, _ = run(cfg_a, "import", "--json", extra)
t.join()
done = json.loads(result["out"])
after, seg_after = size(store_a), segments(store_a)
vsecs, vout = run(cfg_a, "verify", "--json")
verify = json.loads(vout)

removed = done["removed"]
rate = removed / result["secs"]
print(f"### bench/lifecycle.sh {n} messages (dated 2023-01..2025-06), default = \"2y\", 2 cores\n")
print("| figure | mailkeep | baseline | ratio |")
print("| --- | --- | --- | --- |")
print(f"| deliveries imported / past retention (plan) | {imported['new_deliveries']} / {plan['expired_now']} | | |")
print(f"| expire: removed deliveries / messages | {removed} / {done['messages_removed']} in {result['secs']:.2f} s | | |")
print(f"| expiry rate, deliveries/s (removal + compaction) | {rate:.0f} | | |")
print(f"| compaction: segments rewritten, MB/s of segments | {done['segments_rewritten']}, {seg_before / 1e6 / result['secs']:.1f} | | |")
print(f"| store size (segments + catalog) before / after, MB | {before / 1e6:.1f} / {after / 1e6:.1f} | | {after / before:.3f} |")
print(f"| space given back by compaction, MB | {done['bytes_freed'] / 1e6:.1f} | | |")
print(f"| import of {os.path.basename(extra)} while expiry runs, s | {busy_secs:.2f} | {base_secs:.2f} (same import, identical store, alone) | {base_secs / busy_secs:.2f}x the rate (target >= 0.8) |")
print(f"| verify afterwards | {'OK' if verify['ok'] else 'FAILED'}, {len(verify['removed'])} removals named by tombstones | | |")
if not verify["ok"] or len(verify["removed"]) != removed:
    sys.exit("verify failed after expiry")
PY
