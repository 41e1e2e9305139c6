#!/usr/bin/env bash
# Runs every benchmark in one go (pipe, milter, SMTP filter, store import and
# search), each with its baseline and peer in the same run, draws the
# throughput chart, and writes the results into BENCHMARKS.md between the
# `report:begin` and `report:end` markers (the rest of the file, the
# narrative, is left alone). Outputs are kept in bench/report/.
#
# Usage: bench/report.sh
# Environment (sizes): PIPE_N (1000), MILTER_N (2000), FILTER_N (2000),
# SESSIONS (20), STORE_N (100000).
# Needs what the bench scripts need (postfix, smtp-source, smtp-sink, gcc and
# libmilter-dev for the null milter, python3-milter for the peer) and
# matplotlib for the chart; as root, missing Debian packages are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PIPE_N=${PIPE_N:-1000}
MILTER_N=${MILTER_N:-2000}
FILTER_N=${FILTER_N:-2000}
SESSIONS=${SESSIONS:-20}
STORE_N=${STORE_N:-100000}
OUT=bench/report
mkdir -p "$OUT"

if ! python3 -c 'import matplotlib' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q python3-matplotlib >/dev/null || pip install -q matplotlib
  else
    echo "matplotlib is needed for the chart (apt-get install python3-matplotlib)" >&2
    exit 1
  fi
fi

started=$(date -u +%Y-%m-%dT%H:%MZ)
machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GB RAM, Linux $(uname -r)"
commit=$(git rev-parse --short HEAD)$(git diff --quiet || echo -dirty)

run() {  # NAME COMMAND...: runs one bench, keeps its output
  local name=$1; shift
  echo "== $name: $*" >&2
  { echo "command: \`$*\`"; echo; "$@"; } > "$OUT/$name.md"
}
run pipe bench/pipe.sh "$PIPE_N" 2
run milter bench/milter.sh "$MILTER_N" "$SESSIONS"
run filter bench/filter.sh "$FILTER_N" "$SESSIONS"
run store bench/store.sh "$STORE_N"
python3 bench/chart.py "$OUT" "$OUT/throughput.png"

{
  echo "<!-- report:begin (written by bench/report.sh; do not edit by hand) -->"
  echo "## Latest full report"
  echo
  echo "Run of $started by \`bench/report.sh\` on $machine; mailkeep $commit. Each table compares"
  echo "mailkeep with its baseline and peer measured in the same run."
  echo
  echo "![throughput by capture path](bench/report/throughput.png)"
  for name in pipe milter filter store; do
    echo
    echo "### $name"
    echo
    cat "$OUT/$name.md"
  done
  echo "<!-- report:end -->"
} > "$OUT/section.md"

python3 - "$OUT/section.md" <<'PY'
import re, sys
section = open(sys.argv[1]).read()
text = open("BENCHMARKS.md").read()
pattern = re.compile(r"<!-- report:begin.*?<!-- report:end -->\n?", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text = text.rstrip("\n") + "\n\n" + section
open("BENCHMARKS.md", "w").write(text)
PY
echo "BENCHMARKS.md updated; chart in $OUT/throughput.png" >&2
