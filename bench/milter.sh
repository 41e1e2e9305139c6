#!/usr/bin/env bash
# Throughput of `mailkeep serve` as a Postfix milter (smtpd_milters), side by
# side in the same run with:
#   - Postfix alone (no milter), the baseline;
#   - ../shared/peers/nullmilter.c, a libmilter milter that only answers
#     CONTINUE: the limit of any milter;
#   - the peer ../shared/peers/pymilter_archiver.py (pymilter, mbox + fsync).
# mailkeep archives durably into a Maildir, in a second process an mbox, and in a
# third the native store (the embedded default's destination).
#
# Load: Postfix's smtp-source (SESSIONS parallel sessions, 10 KB messages),
# twice per configuration: one message per connection, then connections
# reused (-d). Target: a private Postfix instance (own config_directory in a
# temp dir, 127.0.0.1 only, `default_transport = discard:`, maillog_file).
# Each configuration is its own smtpd listener in that instance's master.cf
# (`-o smtpd_milters=inet:127.0.0.1:PORT`), with `milter_protocol = 6` and
# `milter_default_action = tempfail`, so a failing milter shows up as
# deferred (missing) messages, never as silent passes. The queue drains
# between runs.
#
# Prints a Markdown table: msg/s (messages Postfix accepted / wall time of
# smtp-source), ratios to Postfix alone and to the null milter, the milter
# process's CPU seconds per 1,000 messages (/proc/PID/stat utime+stime) and
# the whole machine's (/proc/stat), and checks that every accepted message was
# archived exactly once by mailkeep (files in md/new, From_ lines in the
# mbox) and by the peer (From_ lines in its mbox). Exits 1 if a count differs.
#
# Usage: bench/milter.sh [MESSAGES] [SESSIONS]      (defaults: 2000 20)
# Environment: SIZE (payload bytes, 10240), PEERS (../shared/peers),
#   NULLMILTER_SRC, PEER (the .c and .py files, default under PEERS),
#   PEER_PYTHON (/usr/bin/python3, which has Debian's python3-milter),
#   MAILKEEP_LOG (passed to mailkeep), KEEP=1 (keep the temp dir, for its logs),
#   TMPDIR (where the temp dir, the Postfix queue and the archives go; mktemp).
# Needs root (Postfix's master), postfix, gcc, libmilter-dev, python3-milter:
#   apt-get install -y postfix libmilter-dev python3-milter
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
N=${1:-2000}
S=${2:-20}
SIZE=${SIZE:-10240}
PEERS=${PEERS:-../shared/peers}
NULLMILTER_SRC=${NULLMILTER_SRC:-$PEERS/nullmilter.c}
PEER=${PEER:-$PEERS/pymilter_archiver.py}
PEER_PYTHON=${PEER_PYTHON:-/usr/bin/python3}

die() { echo "bench/milter.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (a private Postfix master needs it)"
[ -f "$NULLMILTER_SRC" ] || die "null milter source $NULLMILTER_SRC not found (set PEERS or NULLMILTER_SRC)"
[ -f "$PEER" ] || die "peer $PEER not found (set PEERS or PEER)"
for t in postfix postconf smtp-source; do
  command -v $t >/dev/null || [ -x /usr/sbin/$t ] || die "$t needed: apt-get install -y postfix"
done
[ -f /usr/include/libmilter/mfapi.h ] || die "libmilter-dev needed: apt-get install -y libmilter-dev"
"$PEER_PYTHON" -c 'import Milter' 2>/dev/null ||
  die "$PEER_PYTHON cannot import Milter: apt-get install -y python3-milter (or pip install pymilter and set PEER_PYTHON)"
NULLMILTER_SRC=$(realpath "$NULLMILTER_SRC")
PEER=$(realpath "$PEER")
PATH=/usr/sbin:$PATH

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
cargo build --release --quiet
BIN=$PWD/target/release/mailkeep

WORK=$(mktemp -d -t mailkeep-bench-milter.XXXXXX)
chmod 755 "$WORK"
PIDS=()
gone() { # wait up to 5 s for a process to end, then kill it
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null
}
cleanup() {
  set +e
  if [ -f "$WORK/etc/main.cf" ]; then
    postfix -c "$WORK/etc" stop >/dev/null 2>&1 ||
      script -qc "postfix -c $WORK/etc stop" /dev/null >/dev/null 2>&1
    local mp
    mp=$(tr -d ' ' < "$WORK/queue/pid/master.pid" 2>/dev/null)
    [ -z "$mp" ] || gone "$mp"
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do gone "$p"; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports: smtpd listeners and milters, all distinct, on 127.0.0.1.
read -r P_BASE P_NULL P_MKMD P_MKMBOX P_MKST P_PEER M_NULL M_MKMD M_MKMBOX M_MKST M_PEER < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(11)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

# --- the milters ---------------------------------------------------------
gcc -O2 -o "$WORK/nullmilter" "$NULLMILTER_SRC" -lmilter -lpthread
mkdir -p "$WORK/mk" "$WORK/peer"
cat > "$WORK/mk-md.toml" <<TOML
[milter]
listen = "inet:127.0.0.1:$M_MKMD"

[[rule]]
name = "everything"
archive = ["maildir:$WORK/mk/md"]
TOML
cat > "$WORK/mk-mbox.toml" <<TOML
[milter]
listen = "inet:127.0.0.1:$M_MKMBOX"

[[rule]]
name = "everything"
archive = ["mbox:$WORK/mk/all.mbox"]
TOML
cat > "$WORK/mk-store.toml" <<TOML
[milter]
listen = "inet:127.0.0.1:$M_MKST"

[spool]
dir = "$WORK/mk/spool"

[store]
path = "$WORK/mk/store"

[[rule]]
name = "everything"
archive = ["store"]
TOML
"$BIN" --config "$WORK/mk-md.toml" check-config >/dev/null
"$BIN" --config "$WORK/mk-store.toml" check-config >/dev/null
"$BIN" --config "$WORK/mk-mbox.toml" check-config >/dev/null

"$WORK/nullmilter" "inet:$M_NULL@127.0.0.1" > "$WORK/nullmilter.log" 2>&1 & PID_NULL=$!; PIDS+=($!)
"$BIN" --config "$WORK/mk-md.toml" serve > "$WORK/mk-md.log" 2>&1 & PID_MKMD=$!; PIDS+=($!)
"$BIN" --config "$WORK/mk-mbox.toml" serve > "$WORK/mk-mbox.log" 2>&1 & PID_MKMBOX=$!; PIDS+=($!)
"$BIN" --config "$WORK/mk-store.toml" serve > "$WORK/mk-store.log" 2>&1 & PID_MKST=$!; PIDS+=($!)
"$PEER_PYTHON" "$PEER" "inet:$M_PEER@127.0.0.1" "$WORK/peer/peer.mbox" > "$WORK/peer.log" 2>&1 & PID_PEER=$!; PIDS+=($!)

listening() { ss -Hltn "sport = :$1" | grep -q .; }
wait_port() { # port what logfile
  for _ in $(seq 100); do listening "$1" && return 0; sleep 0.1; done
  echo "bench/milter.sh: $2 is not listening on 127.0.0.1:$1" >&2
  [ -n "${3:-}" ] && cat "$3" >&2
  exit 1
}
wait_port "$M_NULL" "nullmilter" "$WORK/nullmilter.log"
wait_port "$M_MKMD" "mailkeep serve (maildir)" "$WORK/mk-md.log"
wait_port "$M_MKMBOX" "mailkeep serve (mbox)" "$WORK/mk-mbox.log"
wait_port "$M_MKST" "mailkeep serve (store)" "$WORK/mk-store.log"
wait_port "$M_PEER" "pymilter_archiver.py" "$WORK/peer.log"

# --- the private Postfix -------------------------------------------------
mkdir -p "$WORK/etc" "$WORK/queue" "$WORK/data"
chown postfix "$WORK/data"
cat > "$WORK/etc/main.cf" <<CF
# Private instance for bench/milter.sh: accept, then discard.
compatibility_level = 3.6
queue_directory = $WORK/queue
data_directory = $WORK/data
maillog_file = $WORK/maillog
maillog_file_prefixes = $WORK
myhostname = bench.mailkeep.invalid
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
default_transport = discard:
relay_transport = discard:
local_transport = discard:
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_milters =
non_smtpd_milters =
milter_protocol = 6
milter_default_action = tempfail
CF
smtpd() { # port name [milter port]
  echo "127.0.0.1:$1 inet n - n - - smtpd"
  echo "  -o syslog_name=postfix/$2"
  [ -z "${3:-}" ] || echo "  -o smtpd_milters=inet:127.0.0.1:$3"
}
{
  echo "# Private instance for bench/milter.sh: one smtpd per configuration, chroot off."
  smtpd "$P_BASE" base
  smtpd "$P_NULL" null "$M_NULL"
  smtpd "$P_MKMD" mkmd "$M_MKMD"
  smtpd "$P_MKMBOX" mkmbox "$M_MKMBOX"
  smtpd "$P_MKST" mkstore "$M_MKST"
  smtpd "$P_PEER" peer "$M_PEER"
  postfix_services
} > "$WORK/etc/master.cf"
start_postfix
for p in "$P_BASE" "$P_NULL" "$P_MKMD" "$P_MKMBOX" "$P_MKST" "$P_PEER"; do
  wait_port "$p" "postfix smtpd" "$WORK/maillog"
done

# --- measuring -----------------------------------------------------------
TCK=$(getconf CLK_TCK)
sent() { grep -c 'status=sent' "$WORK/maillog" || true; }
queued() { { find "$WORK/queue/incoming" "$WORK/queue/active" "$WORK/queue/deferred" \
  "$WORK/queue/maildrop" -type f 2>/dev/null || true; } | wc -l; }
drain() { # wait until the queue is empty and the maillog has caught up
  local last=-1 now stable=0
  for _ in $(seq 600); do
    now=$(sent)
    if [ "$(queued)" = 0 ] && [ "$now" = "$last" ]; then
      stable=$((stable + 1)); [ $stable -ge 3 ] && return 0
    else stable=0; fi
    last=$now; sleep 0.2
  done
  echo "bench/milter.sh: the queue did not drain" >&2
}
archived() { # how many messages each archive holds
  case $1 in
    mkmd) { find "$WORK/mk/md/new" -type f 2>/dev/null || true; } | wc -l ;;
    mkmbox) grep -c '^From ' "$WORK/mk/all.mbox" 2>/dev/null || true ;;
    peer) grep -c '^From ' "$WORK/peer/peer.mbox" 2>/dev/null || true ;;
    mkstore) "$BIN" --config "$WORK/mk-store.toml" stats --json 2>/dev/null |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["deliveries"])' 2>/dev/null || echo 0 ;;
    *) echo - ;;
  esac
}
SRC_ARGS="-A -s $S -l $SIZE -f alice@example.com -t bob@example.org -M client.example.com -S benchmark"
run() { # name port milter-pid messages mode("" or -d); sets R_* globals
  local name=$1 port=$2 pid=$3 n=$4 mode=$5 s0 a0 c0 b0 t0 t1 c1 b1 a1
  drain
  s0=$(sent); a0=$(archived "$name"); b0=$(busy)
  c0=0; [ "$pid" = - ] || c0=$(ticks "$pid")
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  smtp-source $SRC_ARGS $mode -m "$n" "127.0.0.1:$port" > "$WORK/smtp-source.log" 2>&1 ||
    { cat "$WORK/smtp-source.log" >&2; die "smtp-source failed against $name"; }
  t1=$(date +%s.%N)
  drain
  b1=$(busy); c1=0; [ "$pid" = - ] || c1=$(ticks "$pid")
  a1=$(archived "$name")
  R_WALL=$(python3 -c "print($t1 - $t0)")
  R_ACC=$(( $(sent) - s0 ))
  R_ARCH=-; [ "$a0" = - ] || R_ARCH=$((a1 - a0))
  R_CPU=-; [ "$pid" = - ] || R_CPU=$(python3 -c "print(($c1 - $c0) / $TCK)")
  R_BUSY=$(python3 -c "print(($b1 - $b0) / $TCK)")
}

CONFIGS="base null mkmd mkmbox mkstore peer"
declare -A PORT=([base]=$P_BASE [null]=$P_NULL [mkmd]=$P_MKMD [mkmbox]=$P_MKMBOX [mkstore]=$P_MKST [peer]=$P_PEER)
declare -A PID=([base]=- [null]=$PID_NULL [mkmd]=$PID_MKMD [mkmbox]=$PID_MKMBOX [mkstore]=$PID_MKST [peer]=$PID_PEER)
declare -A LABEL=(
  [base]="Postfix alone (no milter)"
  [null]="nullmilter.c (libmilter, CONTINUE only)"
  [mkmd]="mailkeep serve, Maildir"
  [mkmbox]="mailkeep serve, mbox"
  [mkstore]="mailkeep serve, native store (the embedded default)"
  [peer]="peer pymilter_archiver.py (mbox)"
)
declare -A MODES=([1]="" [d]="-d")
declare -A MODELABEL=([1]="1 msg/conn" [d]="reused (-d)")
declare -A RATE CPU BUSYK ACC ARCH

# Warm-up: start smtpd processes, milter connections, page caches.
for c in $CONFIGS; do run "$c" "${PORT[$c]}" "${PID[$c]}" 100 -d; done

FAIL=0
for m in 1 d; do
  for c in $CONFIGS; do
    run "$c" "${PORT[$c]}" "${PID[$c]}" "$N" "${MODES[$m]}"
    k=$c.$m
    RATE[$k]=$(python3 -c "print(f'{$R_ACC / $R_WALL:.1f}')")
    CPU[$k]=-; [ "$R_CPU" = - ] || CPU[$k]=$(python3 -c "print(f'{$R_CPU * 1000 / max($R_ACC, 1):.3f}')")
    BUSYK[$k]=$(python3 -c "print(f'{$R_BUSY * 1000 / max($R_ACC, 1):.2f}')")
    ACC[$k]=$R_ACC; ARCH[$k]=$R_ARCH
    if [ "$R_ACC" != "$N" ]; then
      echo "WARNING: $c, ${MODELABEL[$m]}: Postfix accepted $R_ACC of $N messages" >&2; FAIL=1
    fi
    if [ "$R_ARCH" != - ] && [ "$R_ARCH" != "$R_ACC" ]; then
      echo "WARNING: $c, ${MODELABEL[$m]}: $R_ARCH archived, $R_ACC accepted" >&2; FAIL=1
    fi
  done
done

# Where mailkeep's CPU goes: the protocol side (tokio workers) and the
# archive writer thread (group commit), user and system, over every message
# it saw (the warm-up included).
threads() { # pid messages
  local t
  for t in /proc/"$1"/task/*; do
    echo "$(cat "$t/comm") $(sed 's/.*) //' "$t/stat" | awk '{print $12, $13}')"
  done | awk -v n="$2" -v tck="$TCK" '
    { k = ($1 == "mailkeep-commit") ? "w" : ($1 ~ /tokio/ ? "p" : "o"); u[k] += $2; s[k] += $3 }
    END { printf "protocol (tokio workers) user %.3f + sys %.3f; archive writer (mailkeep-commit) user %.3f + sys %.3f; other threads %.3f\n",
            u["p"] * 1000 / tck / n, s["p"] * 1000 / tck / n, u["w"] * 1000 / tck / n, s["w"] * 1000 / tck / n, (u["o"] + s["o"]) * 1000 / tck / n }'
}
MK_THR_MD=$(threads "$PID_MKMD" $((ACC[mkmd.1] + ACC[mkmd.d] + 100)))
MK_THR_MBOX=$(threads "$PID_MKMBOX" $((ACC[mkmbox.1] + ACC[mkmbox.d] + 100)))
MK_THR_ST=$(threads "$PID_MKST" $((ACC[mkstore.1] + ACC[mkstore.d] + 100)))

# mailkeep's own account of what it could not archive.
kill -TERM "$PID_MKMD" "$PID_MKMBOX" "$PID_MKST" 2>/dev/null || true
for p in "$PID_MKMD" "$PID_MKMBOX" "$PID_MKST"; do
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
done
MK_STOP_MD=$(grep 'serve: stopped' "$WORK/mk-md.log" || echo "(no stop line)")
MK_STOP_MBOX=$(grep 'serve: stopped' "$WORK/mk-mbox.log" || echo "(no stop line)")
MK_STOP_ST=$(grep 'serve: stopped' "$WORK/mk-store.log" || echo "(no stop line)")

ratio() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else python3 -c "print(f'{$1/$2:.2f}')"; fi; }
FS=$(df -PT "$WORK" | awk 'NR==2{print $2}')
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr), archives on $FS;" \
  "Postfix $(postconf -d -h mail_version 2>/dev/null), mailkeep $(git describe --always --dirty 2>/dev/null || echo ?) (release build)"
echo "command: bench/milter.sh $N $S   (SIZE=$SIZE); load average at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load: smtp-source $SRC_ARGS [-d] -m $N 127.0.0.1:PORT   (-d: connections reused; without: one message per connection)"
echo "Postfix: private instance, default_transport = discard:, milter_protocol = 6, milter_default_action = tempfail; warm-up 100 messages per configuration first"
echo
echo "| milter | connections | msg/s | vs Postfix alone | vs null milter | milter CPU s / 1000 msg | machine CPU s / 1000 msg (all processes) | accepted | archived |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for m in 1 d; do
  for c in $CONFIGS; do
    k=$c.$m
    echo "| ${LABEL[$c]} | ${MODELABEL[$m]} | ${RATE[$k]} | $(ratio "${RATE[$k]}" "${RATE[base.$m]}") |" \
      "$(ratio "${RATE[$k]}" "${RATE[null.$m]}") | ${CPU[$k]} | ${BUSYK[$k]} | ${ACC[$k]} | ${ARCH[$k]} |"
  done
done
echo
for m in 1 d; do
  echo "${MODELABEL[$m]}: mailkeep Maildir / null milter = $(ratio "${RATE[mkmd.$m]}" "${RATE[null.$m]}")," \
    "mbox / null milter = $(ratio "${RATE[mkmbox.$m]}" "${RATE[null.$m]}")," \
    "store / null milter = $(ratio "${RATE[mkstore.$m]}" "${RATE[null.$m]}") (target >= 0.95);" \
    "Maildir / Postfix alone = $(ratio "${RATE[mkmd.$m]}" "${RATE[base.$m]}");" \
    "CPU mailkeep Maildir / peer = $(ratio "${CPU[mkmd.$m]}" "${CPU[peer.$m]}")," \
    "mbox / peer = $(ratio "${CPU[mkmbox.$m]}" "${CPU[peer.$m]}")," \
    "store / peer = $(ratio "${CPU[mkstore.$m]}" "${CPU[peer.$m]}") (target <= 1)"
done
echo "mailkeep Maildir CPU s / 1000 msg by thread: $MK_THR_MD"
echo "mailkeep mbox CPU s / 1000 msg by thread: $MK_THR_MBOX"
echo "mailkeep store CPU s / 1000 msg by thread: $MK_THR_ST"
echo "mailkeep Maildir: $MK_STOP_MD"
echo "mailkeep mbox: $MK_STOP_MBOX"
echo "mailkeep store: $MK_STOP_ST"
REJ=$(grep -c 'smtpd.*\(reject\|milter\|warning\)' "$WORK/maillog" || true)
[ "$REJ" = 0 ] || { echo "maillog: $REJ smtpd reject/milter/warning lines, the last ones:"; grep 'smtpd.*\(reject\|milter\|warning\)' "$WORK/maillog" | tail -5; }
[ "$FAIL" = 0 ] || { echo "archive or acceptance counts differ (see warnings above)" >&2; exit 1; }
