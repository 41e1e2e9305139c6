#!/usr/bin/env bash
# Throughput of `mailkeep pipe` as Postfix runs it (one process per message,
# archive, then SMTP reinjection), side by side with the peer
# ../shared/peers/pipe_archiver.py doing the same job (mbox + SMTP), against
# the same smtp-sink on 127.0.0.1, in the same run.
#
# Usage: bench/pipe.sh [MESSAGES] [PARALLEL] [SIZE_BYTES]
# Prints a Markdown table; BENCHMARKS.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}
P=${2:-2}
SIZE=${3:-10240}
PEER=${PEER:-../shared/peers/pipe_archiver.py}
[ -f "$PEER" ] || { echo "peer $PEER not found" >&2; exit 1; }
command -v smtp-sink >/dev/null || [ -x /usr/sbin/smtp-sink ] || { echo "smtp-sink (postfix) needed" >&2; exit 1; }

cargo build --release --quiet
BIN=$PWD/target/release/mailkeep
WORK=$(mktemp -d)
trap 'kill $SINK 2>/dev/null || true; rm -rf "$WORK"' EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ "$(id -u)" = 0 ]; then U="-u nobody"; else U=""; fi
/usr/sbin/smtp-sink $U 127.0.0.1:$PORT 256 & SINK=$!
sleep 0.3

python3 - "$WORK/msg.eml" "$SIZE" <<'PY'
import sys
size = int(sys.argv[2])
head = b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: benchmark\nMessage-ID: <bench@example.com>\n\n"
line = b"The quick brown fox jumps over the lazy dog. From here on, text.\n"
body = (line * (size // len(line) + 1))[: max(0, size - len(head))]
open(sys.argv[1], "wb").write(head + body)
PY

cat > "$WORK/mbox.toml" <<TOML
[[rule]]
archive = "mbox:$WORK/mk/all.mbox"
TOML
cat > "$WORK/maildir.toml" <<TOML
[[rule]]
archive = "maildir:$WORK/mk/md"
TOML
cat > "$WORK/none.toml" <<TOML
# no rules: reinjection only, the cost of the pipe itself
TOML

run() { # name, command template reading the message on stdin
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  seq "$N" | xargs -P "$P" -I{} sh -c "$* < '$WORK/msg.eml'" || { echo "$name: a run failed" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 -c "import sys; n=$N; t=$end-$start; print(f'{n/t:.1f}')"
}

# The interpreter itself, not a version-manager shim (which costs ~50 ms a start).
PY=$(python3 -c 'import sys; print(sys.executable)')
SMTP="smtp://127.0.0.1:$PORT"
ARGS="--sender=alice@example.com --recipient=bob@example.org --recipient=carol@example.org --queue-id=Q{}"
peer=$(run peer "$PY $PEER $WORK/peer.mbox 127.0.0.1 $PORT alice@example.com bob@example.org carol@example.org")
mk_mbox=$(run mbox "$BIN --config $WORK/mbox.toml pipe $ARGS --reinject $SMTP")
mk_md=$(run maildir "$BIN --config $WORK/maildir.toml pipe $ARGS --reinject $SMTP")
mk_none=$(run none "$BIN --config $WORK/none.toml pipe $ARGS --reinject $SMTP")

# Sanity: every message archived exactly once by each.
count_peer=$(grep -c '^From ' "$WORK/peer.mbox")
count_mbox=$(grep -c '^From ' "$WORK/mk/all.mbox")
count_md=$(ls "$WORK/mk/md/new" | wc -l)
[ "$count_peer" = "$N" ] && [ "$count_mbox" = "$N" ] && [ "$count_md" = "$N" ] || {
  echo "archive counts differ: peer $count_peer mbox $count_mbox maildir $count_md (want $N)" >&2; exit 1; }

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo "machine: $(nproc) cores; $N messages of $SIZE bytes, $P at a time; one process per message; reinjection to smtp-sink on 127.0.0.1"
echo
echo "| pipe filter | msg/s | vs peer |"
echo "| --- | ---: | ---: |"
echo "| peer pipe_archiver.py (mbox + SMTP) | $peer | 1.00 |"
echo "| mailkeep pipe, mbox + SMTP | $mk_mbox | $(ratio "$mk_mbox" "$peer") |"
echo "| mailkeep pipe, Maildir + SMTP | $mk_md | $(ratio "$mk_md" "$peer") |"
echo "| mailkeep pipe, no rule (SMTP only, the floor) | $mk_none | $(ratio "$mk_none" "$peer") |"
