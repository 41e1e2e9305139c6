#!/usr/bin/env bash
# Peak memory of `mailkeep serve` (the SMTP archive receiver: `[filter]`
# without a relay) under large messages, into the native store and into an
# mbox, side by side in one run:
#   - SESSIONS concurrent sessions (100), each carrying a distinct,
#     incompressible message of SIZE bytes (25 MB: base64 of random bytes),
#     all finishing together (every session sends its message but the final
#     dot, waits for the others, then all send the dot at once);
#   - one message of BIG bytes (1 GB).
# Peak RSS is the kernel's high-water mark of the serve process (VmHWM in
# /proc/PID/status) read after the load; the baseline is the same serve
# process's RSS when idle, before the load. Every message must get 250 and
# be archived once (`mailkeep stats --json` for the store, Python's mailbox
# for the mbox); the script exits 1 otherwise.
# Target (issue 13): at most 150 MB in every row.
#
# Usage: bench/memory.sh [SESSIONS] [SIZE] [BIG]   (defaults: 100 25000000 1000000000)
# Environment: KEEP=1 keeps the temp dir; TMPDIR chooses where it goes (it
# needs about 2 × (SESSIONS × SIZE + BIG) bytes free).
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:-100}
SIZE=${2:-25000000}
BIG=${3:-1000000000}

die() { echo "bench/memory.sh: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 needed"

cargo build --release --quiet
BIN=$PWD/target/release/mailkeep
WORK=$(mktemp -d -t mailkeep-bench-memory.XXXXXX)
PID=
cleanup() {
  set +e
  [ -z "$PID" ] || { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kb() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$PID/status"; }
mb() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }

# run NAME DESTINATION SESSIONS SIZE: one serve process, one load, one row.
run() {
  local name=$1 dest=$2 sessions=$3 size=$4 dir=$WORK/$1
  mkdir -p "$dir/spool"
  local archive
  case $dest in
    store) archive=store ;;
    mbox) archive="mbox:$dir/all.mbox" ;;
  esac
  cat > "$dir/mailkeep.toml" <<TOML
[spool]
dir = "$dir/spool"

[store]
path = "$dir/store"

[filter]
listen = "127.0.0.1:$PORT"
dedup_dir = "$dir/dedup"
max_connections = $((sessions + 10))
data_timeout = 3600
data_done_timeout = 3600

[[rule]]
name = "everything"
archive = ["$archive"]
TOML
  "$BIN" --config "$dir/mailkeep.toml" check-config >/dev/null
  "$BIN" --config "$dir/mailkeep.toml" serve > "$dir/serve.log" 2>&1 & PID=$!
  for _ in $(seq 100); do
    grep -q "SMTP archive receiver listening on" "$dir/serve.log" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "SMTP archive receiver listening on" "$dir/serve.log" || { cat "$dir/serve.log" >&2; die "$name: serve did not start"; }
  local idle
  idle=$(kb VmRSS)
  local started out
  started=$(date +%s.%N)
  out=$(python3 bench/memory_load.py "$PORT" "$sessions" "$size") || { echo "$out" >&2; tail -20 "$dir/serve.log" >&2; die "$name: not every message was accepted"; }
  local secs
  secs=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  local peak
  peak=$(kb VmHWM)
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
  local archived
  case $dest in
    store) archived=$("$BIN" --config "$dir/mailkeep.toml" stats --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["deliveries"])') ;;
    mbox) archived=$(python3 -c 'import mailbox, sys; print(len(mailbox.mbox(sys.argv[1])))' "$dir/all.mbox") ;;
  esac
  [ "$archived" = "$sessions" ] || die "$name: $archived archived, $sessions sent"
  local flight
  flight=$(awk -v n="$sessions" -v s="$size" 'BEGIN {printf "%.0f", n * s / 1e6}')
  printf '| %s | %s | %s × %s MB | %s MB | %s | %s | %s s |\n' \
    "$name" "$dest" "$sessions" "$(awk -v s="$size" 'BEGIN {printf "%.0f", s / 1e6}')" \
    "$flight" "$(mb "$idle")" "$(mb "$peak")" "$secs"
  rm -rf "$dir"
}

echo "bench/memory.sh: $S sessions × $SIZE bytes, and one message of $BIG bytes ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| run | destination | load | bytes in flight | idle RSS (MB) | peak RSS (MB) | wall |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
run many-store store "$S" "$SIZE"
run many-mbox mbox "$S" "$SIZE"
run big-store store 1 "$BIG"
run big-mbox mbox 1 "$BIG"
