#!/usr/bin/env python3
"""Throughput chart for bench/report.sh: reads the Markdown tables the bench
scripts printed and draws msg/s per capture path, mailkeep beside its
baseline and peer from the same run.

    python3 bench/chart.py REPORT_DIR OUT.png
"""
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def rows(path):
    """The table rows of a bench output: list of cell lists."""
    out = []
    if not os.path.exists(path):
        return out
    for line in open(path, encoding="utf-8"):
        if line.startswith("| ") and not line.startswith("| ---"):
            out.append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


def rate(cells, col):
    try:
        return float(re.sub(r"[^0-9.]", "", cells[col]))
    except (IndexError, ValueError):
        return None


def pick(table, col, want, also=None):
    """First row whose first cell starts with `want` (and contains `also`)."""
    for r in table:
        if r[0].startswith(want) and (also is None or also in " ".join(r)):
            return rate(r, col)
    return None


def main(report_dir, out_png):
    groups = []  # (capture path, [(label, msg/s, kind)])
    milter = rows(os.path.join(report_dir, "milter.md"))
    if milter:
        groups.append(("milter\n(1 msg/conn)", [
            ("Postfix alone", pick(milter, 2, "Postfix alone", "1 msg/conn"), "base"),
            ("null milter (limit)", pick(milter, 2, "nullmilter", "1 msg/conn"), "base"),
            ("mailkeep mbox", pick(milter, 2, "mailkeep serve, mbox", "1 msg/conn"), "mk"),
            ("mailkeep Maildir", pick(milter, 2, "mailkeep serve, Maildir", "1 msg/conn"), "mk"),
            ("peer pymilter", pick(milter, 2, "peer", "1 msg/conn"), "peer"),
        ]))
    filt = rows(os.path.join(report_dir, "filter.md"))
    if filt:
        groups.append(("SMTP filter\n(after-queue)", [
            ("Postfix alone (plain hop)", pick(filt, 1, "plain reinjection hop"), "base"),
            ("mailkeep mbox", pick(filt, 1, "mailkeep serve, SMTP filter, mbox"), "mk"),
            ("mailkeep Maildir", pick(filt, 1, "mailkeep serve, SMTP filter, Maildir"), "mk"),
            ("peer pipe archiver", pick(filt, 1, "peer"), "peer"),
        ]))
    pipe = rows(os.path.join(report_dir, "pipe.md"))
    if pipe:
        groups.append(("pipe(8)\n(process per msg)", [
            ("no archive (floor)", pick(pipe, 1, "mailkeep pipe, no rule"), "base"),
            ("mailkeep mbox", pick(pipe, 1, "mailkeep pipe, mbox"), "mk"),
            ("mailkeep Maildir", pick(pipe, 1, "mailkeep pipe, Maildir"), "mk"),
            ("peer pipe archiver", pick(pipe, 1, "peer"), "peer"),
        ]))
    store = rows(os.path.join(report_dir, "store.md"))
    if store:
        groups.append(("store import\n(per message)", [
            ("Python mbox→Maildir", pick(store, 2, "import rate, msg/s"), "base"),
            ("mailkeep store", pick(store, 1, "import rate, msg/s"), "mk"),
        ]))
    if not groups:
        sys.exit("no bench output found in %s" % report_dir)
    colors = {"base": "#9e9e9e", "mk": "#1f77b4", "peer": "#ff7f0e"}
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4.6))
    if len(groups) == 1:
        axes = [axes]
    for ax, (title, bars) in zip(axes, groups):
        bars = [b for b in bars if b[1] is not None]
        xs = range(len(bars))
        ax.bar(xs, [b[1] for b in bars], color=[colors[b[2]] for b in bars])
        for x, b in zip(xs, bars):
            ax.text(x, b[1], "%.0f" % b[1], ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([b[0] for b in bars], rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("msg/s")
    fig.suptitle("mailkeep throughput by capture path (grey: baseline, blue: mailkeep, orange: peer; same run)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    print("chart: %s" % out_png)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
