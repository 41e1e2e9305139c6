#!/usr/bin/env bash
# Throughput of `mailkeep serve` as Postfix's after-queue SMTP content filter
# (FILTER_README "advanced" layout, `mailkeep postfix-snippet filter` (a)),
# side by side in the same run with:
#   - a plain reinjection hop: the "content filter" is Postfix's own smtp(8)
#     client talking straight to the reinjection smtpd (the same hop without
#     mailkeep; the limit of any SMTP content filter);
#   - the peer ../shared/peers/pipe_archiver.py as it is, as a pipe(8) content
#     filter (one Python process per message: mbox + fsync, smtplib reinjection).
# mailkeep archives durably into a Maildir, in a second process an mbox, and in
# a third the native store (`archive = ["store"]`, the embedded default's).
#
# Path of every message: smtp-source (SESSIONS sessions, 10 KB messages)
#   -> private Postfix smtpd (one listener per configuration, each with its own
#      `-o content_filter=...`) -> queue -> the content filter hop
#   -> reinjection smtpd 127.0.0.1:REINJECT (content_filter=, no_milters, ...)
#   -> queue -> `discard:`.
# The filter transports (plainhop, mkmd, mkmbox, mkstore: smtp(8); peerpipe: pipe(8))
# all run FILTER_PROCS (20) processes, and the smtp ones carry the snippet's
# options (XFORWARD, no MIME conversion, no generic maps).
#
# Throughput is end to end: messages delivered (discarded) after the filter
# hop / time from the start of smtp-source until the queue (incoming, active,
# maildrop) is empty; the after-queue hop runs asynchronously, so
# smtp-source's own rate is printed too but is not the figure. CPU: mailkeep's
# process (/proc/PID/stat utime+stime, and by thread) and the whole machine's
# (/proc/stat, all but idle and iowait) over the same interval; pipe(8)'s
# Python children are short-lived, so for the peer only the machine figure
# (and its excess over the plain hop) is given. Every delivered message must
# have been archived exactly once: files in md/new and `^From ` lines in the
# mboxes equal the discarded count, and the inbound queue ids found in the
# archived copies (`with ESMTP id QID`) are all distinct. Exits 1 otherwise.
#
# Usage: bench/filter.sh [MESSAGES] [SESSIONS]      (defaults: 2000 20)
# Environment: SIZE (payload bytes, 10240), SRC_OPTS (extra smtp-source
#   options, default "-d": connections reused; "" for one message per
#   connection), FILTER_PROCS (20), PEERS (../shared/peers), PEER (the peer
#   script), PEER_PYTHON (/usr/bin/python3), MAILKEEP_LOG (passed to mailkeep),
#   RUN_TIMEOUT (seconds per configuration, 300), KEEP=1 (keep the temp dir),
#   TMPDIR (where the temp dir, the Postfix queue and the archives go; mktemp).
# Needs root (Postfix's master, pipe(8) user=nobody) and postfix:
#   apt-get install -y postfix
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
N=${1:-2000}
S=${2:-20}
SIZE=${SIZE:-10240}
SRC_OPTS=${SRC_OPTS--d}
FILTER_PROCS=${FILTER_PROCS:-20}
PEERS=${PEERS:-../shared/peers}
PEER=${PEER:-$PEERS/pipe_archiver.py}
PEER_PYTHON=${PEER_PYTHON:-/usr/bin/python3}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}

die() { echo "bench/filter.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (a private Postfix master needs it)"
[ -f "$PEER" ] || die "peer $PEER not found (set PEERS or PEER)"
[ -x "$PEER_PYTHON" ] || die "$PEER_PYTHON not found (set PEER_PYTHON)"
for t in postfix postconf smtp-source; do
  command -v $t >/dev/null || [ -x /usr/sbin/$t ] || die "$t needed: apt-get install -y postfix"
done
id nobody >/dev/null 2>&1 || die "user nobody needed (pipe(8) runs the peer as nobody)"
PEER=$(realpath "$PEER")
su -s /bin/sh nobody -c "test -r '$PEER'" || die "user nobody cannot read $PEER"
PATH=/usr/sbin:$PATH

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
cargo build --release --quiet
BIN=$PWD/target/release/mailkeep

WORK=$(mktemp -d -t mailkeep-bench-filter.XXXXXX)
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

# Ports, all distinct, on 127.0.0.1: inbound smtpd per configuration, the
# reinjection smtpd, mailkeep's two filter listeners.
read -r P_PLAIN P_MKMD P_MKMBOX P_PEER P_REINJ F_MKMD F_MKMBOX P_MKSTORE F_MKSTORE < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(9)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

# --- mailkeep ------------------------------------------------------------
mkdir -p "$WORK/mk" "$WORK/spool" "$WORK/peer"
chown nobody "$WORK/peer"
mkconf() { # file listen-port dedup-dir archive [extra TOML]
  cat > "$1" <<TOML
${5:-}
[spool]
dir = "$WORK/spool"

[filter]
listen = "127.0.0.1:$2"
relay = "127.0.0.1:$P_REINJ"
dedup_dir = "$3"

[[rule]]
name = "everything"
archive = ["$4"]
TOML
  "$BIN" --config "$1" check-config >/dev/null
}
mkconf "$WORK/mk-md.toml" "$F_MKMD" "$WORK/dedup-md" "maildir:$WORK/mk/md"
mkconf "$WORK/mk-mbox.toml" "$F_MKMBOX" "$WORK/dedup-mbox" "mbox:$WORK/mk/all.mbox"
mkconf "$WORK/mk-store.toml" "$F_MKSTORE" "$WORK/dedup-store" "store" "[store]
path = \"$WORK/mk/store\"
"
"$BIN" --config "$WORK/mk-md.toml" serve > "$WORK/mk-md.log" 2>&1 & PID_MKMD=$!; PIDS+=($!)
"$BIN" --config "$WORK/mk-mbox.toml" serve > "$WORK/mk-mbox.log" 2>&1 & PID_MKMBOX=$!; PIDS+=($!)
"$BIN" --config "$WORK/mk-store.toml" serve > "$WORK/mk-store.log" 2>&1 & PID_MKSTORE=$!; PIDS+=($!)

listening() { ss -Hltn "sport = :$1" | grep -q .; }
wait_ready() { # port what logfile [line to wait for in logfile]
  for _ in $(seq 100); do
    if listening "$1" && { [ -z "${4:-}" ] || grep -q "$4" "$3" 2>/dev/null; }; then return 0; fi
    sleep 0.1
  done
  echo "bench/filter.sh: $2 is not listening on 127.0.0.1:$1" >&2
  [ -n "${3:-}" ] && cat "$3" >&2
  exit 1
}
wait_ready "$F_MKMD" "mailkeep serve (maildir)" "$WORK/mk-md.log" "SMTP filter listening on"
wait_ready "$F_MKMBOX" "mailkeep serve (mbox)" "$WORK/mk-mbox.log" "SMTP filter listening on"
wait_ready "$F_MKSTORE" "mailkeep serve (store)" "$WORK/mk-store.log" "SMTP filter listening on"

# --- the private Postfix -------------------------------------------------
mkdir -p "$WORK/etc" "$WORK/queue" "$WORK/data"
chown postfix "$WORK/data"
cat > "$WORK/etc/main.cf" <<CF
# Private instance for bench/filter.sh: accept, content filter hop, reinject, discard.
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
smtpd_sasl_authenticated_header = yes
# content_filter is set per inbound smtpd listener in master.cf.
content_filter =
CF
inbound() { # port name content_filter
  echo "127.0.0.1:$1 inet n - n - - smtpd"
  echo "  -o syslog_name=postfix/in-$2"
  echo "  -o content_filter=$3"
}
smtp_hop() { # transport name
  echo "$1 unix - - n - $FILTER_PROCS smtp"
  echo "  -o syslog_name=postfix/$1"
  echo "  -o smtp_send_xforward_command=yes"
  echo "  -o disable_mime_output_conversion=yes"
  echo "  -o smtp_generic_maps="
}
{
  echo "# Private instance for bench/filter.sh: one inbound smtpd per configuration, chroot off."
  inbound "$P_PLAIN" plain "plainhop:[127.0.0.1]:$P_REINJ"
  inbound "$P_MKMD" mkmd "mkmd:[127.0.0.1]:$F_MKMD"
  inbound "$P_MKMBOX" mkmbox "mkmbox:[127.0.0.1]:$F_MKMBOX"
  inbound "$P_MKSTORE" mkstore "mkstore:[127.0.0.1]:$F_MKSTORE"
  inbound "$P_PEER" peer "peerpipe:dummy"
  cat <<CF
# The reinjection smtpd, as in \`mailkeep postfix-snippet filter\` (a), but
# with the default process limit: it must not be the bottleneck of any hop.
127.0.0.1:$P_REINJ inet n - n - - smtpd
  -o syslog_name=postfix/reinject
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
CF
  smtp_hop plainhop
  smtp_hop mkmd
  smtp_hop mkmbox
  smtp_hop mkstore
  cat <<CF
peerpipe unix - n n - $FILTER_PROCS pipe
  flags=Rq user=nobody null_sender=
  argv=$PEER_PYTHON $PEER $WORK/peer/peer.mbox 127.0.0.1 $P_REINJ \${sender} \${recipient}
CF
  postfix_services
} > "$WORK/etc/master.cf"
start_postfix
for p in "$P_PLAIN" "$P_MKMD" "$P_MKMBOX" "$P_MKSTORE" "$P_PEER" "$P_REINJ"; do
  wait_ready "$p" "postfix smtpd" "$WORK/maillog"
done

# --- measuring -----------------------------------------------------------
TCK=$(getconf CLK_TCK)
Q=$WORK/queue
now() { date +%s.%N; }
shopt -s nullglob
in_flight() { # queue files not yet delivered nor deferred (no fork: polled often)
  local f=("$Q"/incoming/* "$Q"/active/* "$Q"/maildrop/*)
  echo ${#f[@]}
}
deferred_files() { { find "$Q/deferred" "$Q/hold" -type f 2>/dev/null || true; } | wc -l; }
LOGOFF=0
since() { tail -c +$((LOGOFF + 1)) "$WORK/maillog" 2>/dev/null || true; } # this run's log
count() { since | grep -c "$1" || true; }
DISCARDED='postfix/discard\[[0-9]*\]: .*status=sent'
logsettle() { # wait until the maillog has caught up (postlogd is asynchronous)
  local want=$1 last=-1 c stable=0
  for _ in $(seq 100); do
    c=$(count "$DISCARDED")
    [ "$c" -ge "$want" ] && return 0
    if [ "$c" = "$last" ]; then stable=$((stable + 1)); [ $stable -ge 10 ] && return 0; else stable=0; fi
    last=$c; sleep 0.1
  done
}
idle() { # the queue is empty between runs
  for _ in $(seq $((RUN_TIMEOUT * 10))); do [ "$(in_flight)" = 0 ] && return 0; sleep 0.1; done
  die "the queue did not drain"
}
froms() { local c; c=$(grep -c '^From ' "$1" 2>/dev/null || true); echo "${c:-0}"; }
archived() { # how many messages each archive holds
  case $1 in
    mkmd) { find "$WORK/mk/md/new" -type f 2>/dev/null || true; } | wc -l ;;
    mkmbox) froms "$WORK/mk/all.mbox" ;;
    mkstore) "$BIN" --config "$WORK/mk-store.toml" stats --json 2>/dev/null |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["deliveries"])' 2>/dev/null || echo 0 ;;
    peer) froms "$WORK/peer/peer.mbox" ;;
    *) echo - ;;
  esac
}
ids() { # inbound queue ids in the archived copies: "total distinct"
  local files
  if [ "$1" = mkstore ]; then # the store keeps XFORWARD's IDENT: the inbound queue id
    { "$BIN" --config "$WORK/mk-store.toml" search --json --limit 100000000 '' 2>/dev/null || true; } |
      python3 -c 'import json, sys; q = [json.loads(l)["queue_id"] for l in sys.stdin]; print(len(q), len(set(q)))'
    return
  fi
  case $1 in
    mkmd) files=("$WORK/mk/md/new"/*) ;;
    mkmbox) files=("$WORK/mk/all.mbox") ;;
    peer) files=("$WORK/peer/peer.mbox") ;;
  esac
  [ ${#files[@]} -gt 0 ] || { echo "0 0"; return; }
  printf '%s\0' "${files[@]}" | { xargs -0 grep -ho 'by bench\.mailkeep\.invalid (Postfix) with E\?SMTP id [0-9A-Za-z]*' || true; } |
    awk '{print $NF}' | sort | uniq -c | awk '{t += $1; d++} END {print t + 0, d + 0}'
}
thread_ticks() { # pid -> "protocol_user protocol_sys commit_user commit_sys other"
  local t
  for t in /proc/"$1"/task/*; do
    echo "$(cat "$t/comm") $(sed 's/.*) //' "$t/stat" | awk '{print $12, $13}')"
  done | awk '{ k = ($1 == "mailkeep-commit") ? "w" : ($1 ~ /tokio/ ? "p" : "o"); u[k] += $2; s[k] += $3 }
    END { print u["p"] + 0, s["p"] + 0, u["w"] + 0, s["w"] + 0, u["o"] + s["o"] + 0 }'
}
SRC_ARGS="-A -s $S -l $SIZE -f alice@example.com -t bob@example.org -M client.example.com -S benchmark $SRC_OPTS"
declare -A HOPLOG=([plain]='postfix/plainhop/smtp\[' [mkmd]='postfix/mkmd/smtp\[' [mkmbox]='postfix/mkmbox/smtp\[' [mkstore]='postfix/mkstore/smtp\[' [peer]='postfix/pipe\[')
run() { # name port mailkeep-pid messages; sets R_* globals
  local name=$1 port=$2 pid=$3 n=$4 a0 c0 b0 t0 t1 t2 c1 b1 a1 th0 th1 polls=0
  idle
  LOGOFF=$(stat -c %s "$WORK/maillog")
  a0=$(archived "$name"); b0=$(busy)
  c0=0; th0="0 0 0 0 0"
  [ "$pid" = - ] || { c0=$(ticks "$pid"); th0=$(thread_ticks "$pid"); }
  t0=$(now)
  # shellcheck disable=SC2086
  smtp-source $SRC_ARGS -m "$n" "127.0.0.1:$port" > "$WORK/smtp-source.log" 2>&1 ||
    { cat "$WORK/smtp-source.log" >&2; die "smtp-source failed against $name"; }
  t1=$(now)
  while [ "$(in_flight)" != 0 ]; do
    polls=$((polls + 1))
    [ $polls -le $((RUN_TIMEOUT * 20)) ] || { echo "bench/filter.sh: $name: queue not empty after ${RUN_TIMEOUT}s" >&2; break; }
    sleep 0.05
  done
  t2=$(now)
  b1=$(busy); c1=0; th1="0 0 0 0 0"
  [ "$pid" = - ] || { c1=$(ticks "$pid"); th1=$(thread_ticks "$pid"); }
  logsettle "$n"
  a1=$(archived "$name")
  R_SRC=$(python3 -c "print($t1 - $t0)")
  R_E2E=$(python3 -c "print($t2 - $t0)")
  R_INJ=$(count "postfix/in-$name/smtpd\[[0-9]*\]: [0-9A-F]*: client=")
  R_HOP=$(count "${HOPLOG[$name]}[0-9]*\]: .*status=sent")
  R_DEL=$(count "$DISCARDED")
  R_DEFER=$(count 'status=deferred')
  R_BOUNCE=$(count 'status=bounced')
  R_DFILES=$(deferred_files)
  R_ARCH=-; [ "$a0" = - ] || R_ARCH=$((a1 - a0))
  R_CPU=-; [ "$pid" = - ] || R_CPU=$(python3 -c "print(($c1 - $c0) / $TCK)")
  R_BUSY=$(python3 -c "print(($b1 - $b0) / $TCK)")
  R_THR=$(python3 -c "
a = '$th0'.split(); b = '$th1'.split(); n = max($R_DEL, 1)
d = [(int(y) - int(x)) * 1000 / $TCK / n for x, y in zip(a, b)]
print(f'protocol (tokio workers) user {d[0]:.3f} + sys {d[1]:.3f}; archive writer (mailkeep-commit) user {d[2]:.3f} + sys {d[3]:.3f}; other threads {d[4]:.3f}')")
  # The filter hop's own account of where a message's time goes:
  # delays=a/b/c/d (before the queue manager, in the queue manager,
  # connection setup, transmission), averaged over this run's deliveries.
  R_DELAYS=$(since | { grep "${HOPLOG[$name]}[0-9]*\]: .*status=sent" || true; } |
    sed -n 's/.*delays=\([0-9.]*\)\/\([0-9.]*\)\/\([0-9.]*\)\/\([0-9.]*\),.*/\1 \2 \3 \4/p' |
    awk '{for (i = 1; i <= 4; i++) s[i] += $i; n++}
      END {if (n) printf "%.3f/%.3f/%.3f/%.3f", s[1]/n, s[2]/n, s[3]/n, s[4]/n; else print "-"}')
}

CONFIGS="plain mkmd mkmbox mkstore peer"
declare -A PORT=([plain]=$P_PLAIN [mkmd]=$P_MKMD [mkmbox]=$P_MKMBOX [mkstore]=$P_MKSTORE [peer]=$P_PEER)
declare -A PID=([plain]=- [mkmd]=$PID_MKMD [mkmbox]=$PID_MKMBOX [mkstore]=$PID_MKSTORE [peer]=-)
declare -A LABEL=(
  [plain]="plain reinjection hop (smtp(8) -> reinjection smtpd, no filter)"
  [mkmd]="mailkeep serve, SMTP filter, Maildir"
  [mkmbox]="mailkeep serve, SMTP filter, mbox"
  [mkstore]="mailkeep serve, SMTP filter, native store"
  [peer]="peer pipe_archiver.py, pipe(8) (mbox)"
)
declare -A RATE SRCRATE E2E CPU BUSYK INJ HOP DEL ARCH DEFER DELAYS THR TOTDEL

# Warm-up: start smtpd/smtp/pipe processes, mailkeep's connections, page caches.
for c in $CONFIGS; do
  run "$c" "${PORT[$c]}" "${PID[$c]}" 100
  TOTDEL[$c]=$R_DEL
done

FAIL=0
for c in $CONFIGS; do
  run "$c" "${PORT[$c]}" "${PID[$c]}" "$N"
  RATE[$c]=$(python3 -c "print(f'{$R_DEL / $R_E2E:.1f}')")
  SRCRATE[$c]=$(python3 -c "print(f'{$R_INJ / $R_SRC:.1f}')")
  E2E[$c]=$(python3 -c "print(f'{$R_E2E:.2f}')")
  CPU[$c]=-; [ "$R_CPU" = - ] || CPU[$c]=$(python3 -c "print(f'{$R_CPU * 1000 / max($R_DEL, 1):.3f}')")
  BUSYK[$c]=$(python3 -c "print(f'{$R_BUSY * 1000 / max($R_DEL, 1):.2f}')")
  INJ[$c]=$R_INJ; HOP[$c]=$R_HOP; DEL[$c]=$R_DEL; ARCH[$c]=$R_ARCH; DELAYS[$c]=$R_DELAYS; THR[$c]=$R_THR
  DEFER[$c]="$R_DEFER/$R_BOUNCE/$R_DFILES"
  TOTDEL[$c]=$((TOTDEL[$c] + R_DEL))
  if [ "$R_DEL" != "$N" ] || [ "$R_HOP" != "$N" ]; then
    echo "WARNING: $c: $R_INJ injected, $R_HOP passed the filter hop, $R_DEL delivered of $N" \
      "($R_DEFER deferred, $R_BOUNCE bounced log lines; $R_DFILES files in deferred/hold)" >&2; FAIL=1
  fi
  if [ "$R_ARCH" != - ] && [ "$R_ARCH" != "$R_DEL" ]; then
    echo "WARNING: $c: $R_ARCH archived, $R_DEL delivered" >&2; FAIL=1
  fi
done

# Exactly once over the whole run (warm-up included): one archived copy per
# delivered message, every inbound queue id once.
declare -A ONCE
for c in mkmd mkmbox mkstore peer; do
  read -r tot dist < <(ids "$c")
  ONCE[$c]="$tot copies, $dist distinct queue ids, ${TOTDEL[$c]} delivered"
  if [ "$tot" != "$dist" ] || [ "$tot" != "${TOTDEL[$c]}" ]; then
    echo "WARNING: $c: archive holds ${ONCE[$c]}" >&2; FAIL=1
  fi
done

# mailkeep's own account of what it could not archive.
kill -TERM "$PID_MKMD" "$PID_MKMBOX" "$PID_MKSTORE" 2>/dev/null || true
for p in "$PID_MKMD" "$PID_MKMBOX" "$PID_MKSTORE"; do
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
done
MK_STOP_MD=$(grep 'serve: stopped' "$WORK/mk-md.log" || echo "(no stop line)")
MK_STOP_MBOX=$(grep 'serve: stopped' "$WORK/mk-mbox.log" || echo "(no stop line)")
MK_STOP_STORE=$(grep 'serve: stopped' "$WORK/mk-store.log" || echo "(no stop line)")
MK_ERR=$(cat "$WORK/mk-md.log" "$WORK/mk-mbox.log" "$WORK/mk-store.log" | grep -c 'WARN\|ERROR' || true)

ratio() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else python3 -c "print(f'{$1/$2:.2f}')"; fi; }
minus() { python3 -c "print(f'{$1 - $2:.2f}')"; }
FS=$(df -PT "$WORK" | awk 'NR==2{print $2}')
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr), archives and queue on $FS;" \
  "Postfix $(postconf -d -h mail_version 2>/dev/null), mailkeep $(git describe --always --dirty 2>/dev/null || echo ?) (release build)"
echo "command: bench/filter.sh $N $S   (SIZE=$SIZE SRC_OPTS=\"$SRC_OPTS\" FILTER_PROCS=$FILTER_PROCS); load average at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load: smtp-source $SRC_ARGS -m $N 127.0.0.1:PORT   (warm-up: 100 messages per configuration first)"
echo "path: smtp-source -> smtpd (-o content_filter=HOP) -> queue -> HOP -> reinjection smtpd 127.0.0.1 -> queue -> discard:;" \
  "HOP: plainhop/mkmd/mkmbox/mkstore = smtp(8), $FILTER_PROCS processes, XFORWARD; peerpipe = pipe(8), $FILTER_PROCS processes, flags=Rq user=nobody null_sender="
echo "msg/s = messages discarded after the hop / seconds from the start of smtp-source until the queue is empty"
echo
echo "| content filter hop | msg/s end to end | vs plain hop | smtp-source msg/s | seconds | hop delays a/b/c/d (mean s) | mailkeep CPU s / 1000 msg | machine CPU s / 1000 msg | machine CPU over plain hop | injected | passed hop | discarded | archived | deferred/bounced/left |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for c in $CONFIGS; do
  over=-; [ "$c" = plain ] || over=$(minus "${BUSYK[$c]}" "${BUSYK[plain]}")
  echo "| ${LABEL[$c]} | ${RATE[$c]} | $(ratio "${RATE[$c]}" "${RATE[plain]}") | ${SRCRATE[$c]} | ${E2E[$c]} |" \
    "${DELAYS[$c]} | ${CPU[$c]} | ${BUSYK[$c]} | $over | ${INJ[$c]} | ${HOP[$c]} | ${DEL[$c]} | ${ARCH[$c]} | ${DEFER[$c]} |"
done
echo
echo "mailkeep / plain hop: Maildir $(ratio "${RATE[mkmd]}" "${RATE[plain]}"), mbox $(ratio "${RATE[mkmbox]}" "${RATE[plain]}") (target >= 0.90), store $(ratio "${RATE[mkstore]}" "${RATE[plain]}") (target >= 0.95)"
echo "mailkeep / peer: Maildir $(ratio "${RATE[mkmd]}" "${RATE[peer]}"), mbox $(ratio "${RATE[mkmbox]}" "${RATE[peer]}"), store $(ratio "${RATE[mkstore]}" "${RATE[peer]}") (target >= 10)"
echo "machine CPU s / 1000 msg: plain hop ${BUSYK[plain]}, mailkeep Maildir ${BUSYK[mkmd]} (of which mailkeep ${CPU[mkmd]}), mbox ${BUSYK[mkmbox]} (of which mailkeep ${CPU[mkmbox]}), peer ${BUSYK[peer]}" \
  "(over the plain hop: mailkeep Maildir $(minus "${BUSYK[mkmd]}" "${BUSYK[plain]}"), mbox $(minus "${BUSYK[mkmbox]}" "${BUSYK[plain]}"), peer $(minus "${BUSYK[peer]}" "${BUSYK[plain]}"))"
echo "mailkeep Maildir CPU s / 1000 msg by thread: ${THR[mkmd]}"
echo "mailkeep mbox CPU s / 1000 msg by thread: ${THR[mkmbox]}"
echo "mailkeep store CPU s / 1000 msg by thread: ${THR[mkstore]}"
echo "exactly once (warm-up included): mailkeep Maildir ${ONCE[mkmd]}; mailkeep mbox ${ONCE[mkmbox]}; mailkeep store ${ONCE[mkstore]}; peer ${ONCE[peer]}"
echo "mailkeep Maildir: $MK_STOP_MD"
echo "mailkeep mbox: $MK_STOP_MBOX"
echo "mailkeep store: $MK_STOP_STORE"
[ "$MK_ERR" = 0 ] || { echo "mailkeep logs: $MK_ERR WARN/ERROR lines, the last ones:"; cat "$WORK/mk-md.log" "$WORK/mk-mbox.log" "$WORK/mk-store.log" | grep 'WARN\|ERROR' | tail -5; }
WARNL=$(grep -c 'warning:\|fatal:\|panic:' "$WORK/maillog" || true)
[ "$WARNL" = 0 ] || { echo "maillog: $WARNL warning/fatal lines, the last ones:"; grep 'warning:\|fatal:\|panic:' "$WORK/maillog" | tail -5; }
[ "$FAIL" = 0 ] || { echo "delivery or archive counts differ (see warnings above)" >&2; exit 1; }
