#!/usr/bin/env python3
"""Reproducible mail corpus for the store benchmark (Python 3.9+, standard library only).

    python3 bench/gen_store_corpus.py --out DIR --messages N --seed S [--users 200]
        [--start 2025-07-01] [--end 2026-12-31] [--check]

Writes mboxrd files DIR/user0001.mbox ... DIR/userNNNN.mbox that hold N stored
messages in all, byte-identical for the same arguments. Each stored copy is

    From SENDER Sat Nov 21 22:54:14 2026          (mboxrd separator, asctime, UTC)
    Return-Path: <sender>                         (mailkeep's envelope block)
    X-Envelope-To: <recipient>                    (one line per recipient of this copy)
    X-Mailkeep-Login: alice (PLAIN)               (only for authenticated senders)
    X-Mailkeep-Queue-Id: 4XyZ1234AB               (same for all copies of one message)
    X-Mailkeep-Received: by mx1.example.com via milter; <the message's Date>
    <the original message bytes, identical in every copy>
    <empty line>

with lines matching ^>*From  quoted by one more '>'. About 30% of the distinct
messages have 2-5 local recipients and are stored once in each recipient's file.

What the messages look like (none of it is tuned to a store's strengths):
- words drawn from a Zipf distribution over common English words, business
  words and ~4000 generated pseudo-words, plus a few topic words per message
  (so a word is frequent in some messages and absent from most); fixed
  phrases (PHRASES) appear in bodies; ~8% of messages carry non-ASCII text, their subjects as RFC 2047
  encoded words;
- text size lognormal (median ~10 KB per stored message, long tail);
  ~40% multipart/alternative (plain + HTML), ~10% with a base64 attachment of
  20 KB-2 MB (half compressible text/csv or logs, half random bytes standing
  for PDF/JPEG/PNG/ZIP); quoted-printable on non-ASCII plain parts and on
  most HTML parts; replies with In-Reply-To/References and quoted text;
- dates spread over --start..--end, weighted to working hours and weekdays,
  stored in date order; some senders are local users (with a login line),
  the rest are outside senders.

The vocabulary, the phrase list and the user list do not depend on --seed, so
bench/store_queries.txt matches the corpus for any seed and size (N >= 1000);
its last three lines match nothing (the last one only while --end is before 2027).
--check reads the files back with mailbox.mbox and with a strict mboxrd reader
and checks the message count and that all copies of a message are identical.
"""

import argparse
import base64
import binascii
import bisect
import datetime
import hashlib
import itertools
import mailbox
import math
import os
import random
import re
import statistics
import sys
import time
import unicodedata

# ---------------------------------------------------------------------------
# Fixed material (independent of --seed)

VOCAB_SEED = 0x6D61696C6B656570  # "mailkeep"

# Function words first: they take the top Zipf ranks, as in real text.
COMMON = """the of and to a in is that for it was on with as be at by this have
from or are not but had an they you were his her which we can their all there
been one has if will more would so what when up out about who them do no than
then some into could other time only its new these also your may like any our
just over after first well should because most how very even two back where
much before those through still being here many must way while now each both
under same last since another around between again off need does few please
thanks regards hello hi let know see get make think sure next week today
tomorrow yesterday send sent find attached below above team all good great""".split()

# Topical words a mail archive is searched for; they are spread over mid ranks.
TOPICAL = """invoice budget meeting report project contract schedule payment
order delivery shipment account customer supplier quarterly annual review
agenda minutes proposal draft final approval deadline release update
migration server backup outage incident ticket support license renewal
travel expense receipt refund discount quote estimate forecast revenue
margin audit compliance policy security password access training workshop
conference webinar newsletter announcement holiday office building parking
lunch dinner birthday welcome onboarding interview candidate offer salary
payroll benefits insurance vacation leave sick calendar room booking flight
hotel visa passport warehouse inventory product catalogue pricing tender
bid legal lawyer invoice statement balance transfer bank loan mortgage tax
vat customs freight container pallet courier tracking parcel complaint
warranty repair maintenance inspection certificate permit registration
deployment database cluster network firewall laptop printer phone mobile
spreadsheet presentation slides document signature scan photo video
feedback survey results metrics dashboard analytics campaign marketing
sales partner vendor consultant contractor subcontractor milestone sprint
roadmap backlog requirement specification design prototype testing launch""".split()

# Fixed multi-word phrases, inserted whole into bodies (Zipf over this list too).
PHRASES = [
    "please find attached",
    "quarterly budget review",
    "let me know if you have any questions",
    "looking forward to hearing from you",
    "thanks in advance",
    "as discussed in the meeting",
    "see the attached invoice",
    "the server will be down for maintenance",
    "action items from today",
    "purchase order number",
    "out of office until monday",
    "kind regards",
    "best regards",
    "sorry for the late reply",
    "could you please confirm",
    "the deadline has been moved",
    "meeting notes attached",
    "password reset request",
    "shipping confirmation for your order",
    "annual performance review",
    "travel expense report",
    "new version of the contract",
    "happy to help",
    "on second thought",
    "data migration plan",
    "incident post mortem",
    "holiday party next friday",
    "draft for your review",
    "final approval from legal",
    "quarterly sales figures",
]

# Non-ASCII words sprinkled into ~8% of the messages.
NON_ASCII = ["Grüße", "café", "réunion", "Überweisung", "naïve", "São Paulo",
             "Zürich", "Malmö", "façade", "résumé", "Ångström", "crème brûlée",
             "Düsseldorf", "smörgåsbord", "piñata", "Kraków", "€", "日本語",
             "Привет", "Ελλάδα", "mañana", "coöperation", "jalapeño", "Øresund"]

FIRST = """alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia
peggy rupert sybil trent victor walter xena yusuf zoe amir beatriz chen dmitri
elif fatima goran hana igor jamal kenji lena mateo nadia oskar priya quentin
rosa sanjay tamar ulrich vera wei ximena yara zeynep""".split()
LAST = """smith jones garcia muller rossi silva kim nguyen kowalski novak ivanova
dubois jensen larsen santos costa ali khan tanaka sato haddad cohen okafor
mensah petrov horvat nagy berg lindqvist""".split()
LOCAL_DOMAINS = ["example.com", "example.org"]
EXT_DOMAINS = ["mail.example.net", "partner.example", "vendor.example", "bank.example",
               "shop.example", "lists.example.net", "university.example.edu",
               "consulting.example", "logistics.example", "news.example"]
EXT_NAMES_NONASCII = ["José García", "Zoë Müller", "François Lefèvre", "Jürgen Groß",
                      "Søren Ødegård", "Łukasz Wójcik", "Ana Conceição", "Çağla Öztürk"]

DOW = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MON = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def make_vocabulary():
    """COMMON words on top, then TOPICAL and generated words shuffled together."""
    rng = random.Random(VOCAB_SEED)
    onsets = ["", "b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k",
              "l", "m", "n", "p", "pl", "qu", "r", "s", "sh", "st", "t", "tr", "v", "w", "z"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y"]
    codas = ["", "", "n", "r", "l", "s", "t", "nd", "st", "m", "x", "ck", "rk"]
    taken = set(COMMON) | set(TOPICAL)
    gen = []
    while len(gen) < 4000:
        w = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                    for _ in range(rng.choice((1, 2, 2, 2, 3))))
        if 4 <= len(w) <= 11 and w not in taken:
            taken.add(w)
            gen.append(w)
    mid = list(dict.fromkeys(TOPICAL)) + gen
    rng.shuffle(mid)  # topical words get ranks anywhere below the common words
    return list(dict.fromkeys(COMMON)) + mid


def zipf_cum(n, s):
    acc, out = 0.0, []
    for r in range(1, n + 1):
        acc += 1.0 / r ** s
        out.append(acc)
    return out


def make_users(n):
    """user0001 is alice@example.com, user0002 bob@example.org, then first.last@..."""
    users = [("alice", "example.com"), ("bob", "example.org")]
    seen = {"alice", "bob"}
    for i in itertools.count():
        if len(users) >= n:
            break
        f, l = FIRST[i % len(FIRST)], LAST[(i * 7 + i // len(FIRST)) % len(LAST)]
        local = f"{f}.{l}"
        if local in seen:
            local = f"{f}.{l}{i}"
        seen.add(local)
        users.append((local, LOCAL_DOMAINS[i % 2]))
    return users[:n]


VOCAB = make_vocabulary()
VOCAB_CUM = zipf_cum(len(VOCAB), 1.05)
PHRASE_CUM = zipf_cum(len(PHRASES), 0.9)


# ---------------------------------------------------------------------------
# Text

class Writer:
    def __init__(self, rng):
        self.rng = rng
        self.topic = []  # a few words the current message is about

    def new_topic(self):
        rng = self.rng
        self.topic = rng.sample(TOPICAL, rng.randint(1, 3)) + rng.sample(VOCAB[150:], rng.randint(1, 4))

    def words(self, k):
        return self.rng.choices(VOCAB, cum_weights=VOCAB_CUM, k=k)

    def phrase(self):
        return self.rng.choices(PHRASES, cum_weights=PHRASE_CUM)[0]

    def sentence_words(self, nonascii):
        rng = self.rng
        w = self.words(rng.randint(4, 18))
        if rng.random() < 0.35:
            w.insert(rng.randrange(len(w) + 1), rng.choice(self.topic))
        if rng.random() < 0.015:
            p = rng.randrange(len(w))
            w[p:p] = self.phrase().split()
        if nonascii and rng.random() < 0.3:
            w.insert(rng.randrange(len(w) + 1), rng.choice(NON_ASCII))
        w[0] = w[0][:1].upper() + w[0][1:]
        w[-1] += rng.choice(".........?!:")
        return w

    def paragraphs(self, nbytes, nonascii):
        """List of paragraphs (each a list of words) of about nbytes of text."""
        rng = self.rng
        paras, size = [], 0
        while size < nbytes:
            para = []
            if rng.random() < 0.03:
                # sentences that start a line with "From " exercise mboxrd quoting
                para += ["From", "what", "I", "can", "tell,"]
            for _ in range(rng.randint(1, 6)):
                para += self.sentence_words(nonascii)
            size += sum(len(x) + 1 for x in para) + 1
            paras.append(para)
        return paras

    def subject(self, nonascii):
        rng = self.rng
        r = rng.random()
        if r < 0.12:
            s = f"Invoice {rng.randint(1000, 99999)} for {rng.choice(MON)} {' '.join(self.words(1))}"
        elif r < 0.20:
            s = f"Meeting: {rng.choice(self.topic)} {' '.join(self.words(rng.randint(1, 3)))}"
        elif r < 0.26:
            s = f"Your order {rng.randint(100000, 999999)} has shipped"
        elif r < 0.32:
            s = f"[{self.topic[0]}] {' '.join(self.words(rng.randint(2, 6)))}"
        else:
            w = self.words(rng.randint(1, 6))
            w.insert(rng.randrange(len(w) + 1), rng.choice(self.topic))
            if rng.random() < 0.05:
                w += self.phrase().split()
            s = " ".join(w)
        if nonascii:
            w = s.split(" ")
            w.insert(rng.randrange(len(w) + 1), rng.choice(NON_ASCII))
            s = " ".join(w)
        return s[:1].upper() + s[1:]


def wrap(words, width=72):
    """Greedy word wrap (a word longer than width gets a line of its own)."""
    lines, cur, n = [], [], 0
    for w in words:
        if cur and n + 1 + len(w) > width:
            lines.append(" ".join(cur))
            cur, n = [w], len(w)
        else:
            n += len(w) + (1 if cur else 0)
            cur.append(w)
    if cur:
        lines.append(" ".join(cur))
    return "\n".join(lines)


def html_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------------
# Headers

def encoded_word(s):
    """RFC 2047 B-encoding in UTF-8, split on character boundaries, folded."""
    if all(ord(c) < 128 for c in s):
        return s
    chunks, cur = [], b""
    for ch in s:
        b = ch.encode("utf-8")
        if len(cur) + len(b) > 45:
            chunks.append(cur)
            cur = b""
        cur += b
    chunks.append(cur)
    return "\n ".join("=?UTF-8?B?" + base64.b64encode(c).decode("ascii") + "?=" for c in chunks)


def encoded_word_q(s):
    """RFC 2047 Q-encoding (used for some subjects, as some clients do); each
    encoded word holds whole characters."""
    pieces = []
    for ch in s:
        if ch == " ":
            pieces.append("_")
        elif ch.isascii() and ch.isalnum():
            pieces.append(ch)
        else:
            pieces.append("".join("=%02X" % b for b in ch.encode("utf-8")))
    words, cur = [], ""
    for p in pieces:
        if cur and len(cur) + len(p) > 60:
            words.append(cur)
            cur = ""
        cur += p
    words.append(cur)
    return "\n ".join("=?UTF-8?Q?" + w + "?=" for w in words)


def addr(name, a):
    if not name:
        return a
    if all(ord(c) < 128 for c in name):
        return f'"{name}" <{a}>' if any(c in name for c in ',.;:') else f"{name} <{a}>"
    return f"{encoded_word(name)} <{a}>"


def rfc2822(ts):
    d = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return f"{DOW[d.weekday()]}, {d.day:02d} {MON[d.month - 1]} {d.year} {d:%H:%M:%S} +0000"


def mailkeep_date(ts):
    """The date as mailkeep writes it in X-Mailkeep-Received (chrono's
    to_rfc2822: the day is not zero-padded), so import recognises the block."""
    d = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return f"{DOW[d.weekday()]}, {d.day} {MON[d.month - 1]} {d.year} {d:%H:%M:%S} +0000"


def asctime(ts):
    d = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return f"{DOW[d.weekday()]} {MON[d.month - 1]} {d.day:2d} {d:%H:%M:%S} {d.year}"


def fold_addresses(name, items):
    """Header with a comma-separated address list, folded before ~76 columns."""
    line, out = f"{name}: ", []
    for i, it in enumerate(items):
        piece = it + ("," if i < len(items) - 1 else "")
        if len(line) + len(piece) > 76 and line.strip() != f"{name}:":
            out.append(line.rstrip())
            line = " "
        line += piece + " "
    out.append(line.rstrip())
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Attachments

def attachment(rng, w):
    size = int(math.exp(rng.uniform(math.log(20_000), math.log(2_000_000))))
    kind = rng.random()
    name = "-".join(w.words(2)).replace("/", "")
    if kind < 0.30:  # CSV export: compressible
        pool = [f"{rng.randint(2020, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
                f"ACC{rng.randint(1000, 9999)},{' '.join(w.words(rng.randint(1, 4)))},"
                f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d},{rng.choice(['EUR', 'USD', 'GBP'])}"
                for _ in range(200)]
        rows = rng.choices(pool, k=max(1, size // 48))
        data = ("row,date,account,description,amount,currency\n" +
                "\n".join(f"{i},{r}" for i, r in enumerate(rows, 1)) + "\n").encode()
        return data[:size] if len(data) > size else data, "text/csv", f"{name}.csv"
    if kind < 0.50:  # log file: compressible
        pool = [f"INFO  [{w.words(1)[0]}] {' '.join(w.words(rng.randint(3, 9)))}" for _ in range(300)]
        t0 = rng.randint(1_700_000_000, 1_800_000_000)
        rows = rng.choices(pool, k=max(1, size // 70))
        data = "".join(f"{t0 + i * 3} {r}\n" for i, r in enumerate(rows)).encode()
        return data, "text/plain", f"{name}.log"
    # incompressible: random bytes behind a real magic number
    ctype, ext, magic = rng.choice([
        ("application/pdf", "pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
        ("image/jpeg", "jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
        ("image/png", "png", b"\x89PNG\r\n\x1a\n"),
        ("application/zip", "zip", b"PK\x03\x04"),
    ])
    return magic + rng.randbytes(size - len(magic)), ctype, f"{name}.{ext}"


# ---------------------------------------------------------------------------
# One original message

def text_part(rng, text, ctype, force_qp=False):
    """Returns (headers, encoded body) for a text part."""
    raw = text.encode("utf-8")
    ascii_ = all(b < 128 for b in raw)
    longest = max((len(x) for x in raw.split(b"\n")), default=0)
    charset = "us-ascii" if ascii_ and rng.random() < 0.5 else "utf-8"
    if force_qp or longest > 998 or (not ascii_ and rng.random() < 0.8):
        cte, body = "quoted-printable", binascii.b2a_qp(raw)
    elif not ascii_:
        cte, body = "8bit", raw
    else:
        cte, body = "7bit", raw
    extra = "; format=flowed" if ctype == "text/plain" and rng.random() < 0.2 else ""
    h = f"Content-Type: {ctype}; charset={charset}{extra}\nContent-Transfer-Encoding: {cte}\n"
    if not body.endswith(b"\n"):
        body += b"\n"
    return h.encode(), body


def boundary(rng):
    return "=_" + "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(28))


def build_message(rng, w, m):
    """m: dict with the message's plan. Returns the original message bytes."""
    nonascii = m["nonascii"]
    # Text size: lognormal, median ~5.5 KB of plain text, long tail.
    tsize = min(int(rng.lognormvariate(math.log(5500), 1.0)), 1_500_000)
    paras = w.paragraphs(max(tsize, 120), nonascii)
    greet = f"{rng.choice(['Hi', 'Hello', 'Dear', 'Hey'])} {m['to_first']},"
    sign = f"{rng.choice(['Best regards', 'Thanks', 'Cheers', 'Kind regards'])},\n{m['from_name']}"
    plain_parts = [greet] + [wrap(p) for p in paras] + [sign]
    if m["reply_to"] is not None and rng.random() < 0.8:
        q = w.paragraphs(rng.randint(200, 3000), nonascii)
        quoted = "\n".join("> " + ln if ln else ">" for p in q for ln in (wrap(p, 70).split("\n") + [""]))
        if rng.random() < 0.3:
            quoted += "\n>From the earlier thread:\n> " + " ".join(w.words(8))
        plain_parts.append(f"On {m['reply_date']}, {m['reply_from']} wrote:\n{quoted}")
    if rng.random() < 0.6:
        plain_parts.append(f"-- \n{m['from_name']}\n{' '.join(w.words(2)).title()} Ltd.")
    plain = "\n\n".join(plain_parts) + "\n"

    parts = []  # list of (headers bytes, body bytes) for the body
    if m["alternative"]:
        html = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n" +
                f"<p>{html_escape(greet)}</p>\n" +
                "".join(f"<p style=\"margin:0 0 12px 0;font-family:Arial,sans-serif\">"
                        f"{html_escape(' '.join(p))}</p>\n" for p in paras) +
                f"<p>{html_escape(sign).replace(chr(10), '<br>')}</p>\n</body></html>\n")
        b = boundary(rng)
        ph, pb = text_part(rng, plain, "text/plain")
        hh, hb = text_part(rng, html, "text/html", force_qp=rng.random() < 0.7)
        body = (b"This is a multi-part message in MIME format.\n\n" +
                f"--{b}\n".encode() + ph + b"\n" + pb +
                f"--{b}\n".encode() + hh + b"\n" + hb + f"--{b}--\n".encode())
        top_h = f"Content-Type: multipart/alternative;\n boundary=\"{b}\"\n".encode()
    else:
        top_h, body = text_part(rng, plain, "text/plain")

    if m["attach"]:
        data, ctype, fname = attachment(rng, w)
        b = boundary(rng)
        ah = (f"Content-Type: {ctype}; name=\"{fname}\"\nContent-Transfer-Encoding: base64\n"
              f"Content-Disposition: attachment; filename=\"{fname}\"\n").encode()
        body = (f"--{b}\n".encode() + top_h + b"\n" + body +
                f"--{b}\n".encode() + ah + b"\n" + base64.encodebytes(data) + f"--{b}--\n".encode())
        top_h = f"Content-Type: multipart/mixed;\n boundary=\"{b}\"\n".encode()

    h = []
    if m["external"]:
        ip = f"192.0.2.{rng.randint(1, 254)}"
        h.append(f"Received: from {m['from_addr'].split('@')[1]} ({m['from_addr'].split('@')[1]} [{ip}])\n"
                 f" by mx1.example.com (Postfix) with ESMTPS id {m['qid']}" +
                 (f"\n for <{m['rcpts'][0]}>" if len(m['rcpts']) == 1 else "") + f"; {m['date']}")
        if rng.random() < 0.5:
            h.append(f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={m['from_addr'].split('@')[1]};\n"
                     f" s=sel1; h=from:to:subject:date:message-id;\n"
                     f" bh={base64.b64encode(rng.randbytes(32)).decode()};\n"
                     f" b={base64.b64encode(rng.randbytes(128)).decode()}")
    h.append(f"Date: {m['date']}")
    h.append(f"From: {addr(m['from_name'], m['from_addr'])}")
    h.append(fold_addresses("To", m["to_hdr"]))
    if m["cc_hdr"]:
        h.append(fold_addresses("Cc", m["cc_hdr"]))
    subj = m["subject"]
    if nonascii:
        subj = encoded_word_q(subj) if rng.random() < 0.3 else encoded_word(subj)
    h.append(f"Subject: {subj}")
    h.append(f"Message-ID: {m['msgid']}")
    if m["reply_to"] is not None:
        h.append(f"In-Reply-To: {m['reply_to']}")
        h.append(f"References: {m['reply_to']}")
    h.append(f"MIME-Version: 1.0")
    if rng.random() < 0.5:
        h.append(rng.choice(["User-Agent: Mozilla Thunderbird", "X-Mailer: Microsoft Outlook 16.0",
                             "X-Mailer: Apple Mail (2.3774)", "User-Agent: Roundcube Webmail/1.6",
                             "User-Agent: mutt/2.2"]))
    return ("\n".join(h) + "\n").encode("utf-8") + top_h + b"\n" + body


# ---------------------------------------------------------------------------
# The corpus

FROM_LINE = re.compile(rb"^(>*From )", re.M)
QID_CHARS = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"


def plan_times(rng, count, start, end):
    t0, t1 = start.timestamp(), end.timestamp()
    out = []
    while len(out) < count:
        t = rng.uniform(t0, t1)
        d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
        # fewer messages at night and at weekends
        if d.weekday() >= 5 and rng.random() < 0.7:
            continue
        if not 7 <= d.hour < 19 and rng.random() < 0.6:
            continue
        out.append(int(t))
    out.sort()
    return out


def generate(args):
    rng = random.Random(args.seed)
    w = Writer(rng)
    users = make_users(args.users)
    addrs = [f"{l}@{d}" for l, d in users]
    user_cum = zipf_cum(len(users), 0.8)  # some users get much more mail than others

    # Plan the copy counts so that the total of stored copies is exactly N.
    ncopies, total = [], 0
    while total < args.messages:
        k = rng.randint(2, 5) if rng.random() < 0.30 else 1
        k = min(k, args.messages - total, len(users))
        ncopies.append(k)
        total += k
    times = plan_times(rng, len(ncopies), args.start, args.end)

    os.makedirs(args.out, exist_ok=True)
    files = [open(os.path.join(args.out, f"user{i + 1:04d}.mbox"), "wb", buffering=1 << 20)
             for i in range(len(users))]
    stats = dict(copies=0, originals=0, multi=0, attach=0, alt=0, nonascii=0, login=0, bytes=0)
    copy_sizes, orig_sizes, qids, recent = [], [], set(), []
    for k, ts in zip(ncopies, times):
        # recipients: k distinct local users
        rcpt_idx = []
        while len(rcpt_idx) < k:
            i = bisect.bisect_left(user_cum, rng.random() * user_cum[-1])
            if i not in rcpt_idx:
                rcpt_idx.append(i)
        external = rng.random() < 0.5
        if external:
            if rng.random() < 0.1:
                from_name = rng.choice(EXT_NAMES_NONASCII)
                local = unicodedata.normalize("NFKD", from_name.split()[0].lower())
                local = local.encode("ascii", "ignore").decode() or "info"
            else:
                f, l = rng.choice(FIRST), rng.choice(LAST)
                from_name, local = f"{f.title()} {l.title()}", f"{f}.{l}"
            if rng.random() < 0.3:
                local, from_name = rng.choice(["noreply", "billing", "orders", "newsletter", "support"]), \
                    rng.choice(TOPICAL).title() + " Service"
            from_addr = f"{local}@{rng.choice(EXT_DOMAINS)}"
            env_from = from_addr if rng.random() < 0.8 else f"bounces+{rng.randint(10**5, 10**6)}@{from_addr.split('@')[1]}"
            login = None
        else:
            s = bisect.bisect_left(user_cum, rng.random() * user_cum[-1])
            local, dom = users[s]
            from_addr = env_from = addrs[s]
            from_name = " ".join(x.title() for x in re.sub(r"\d+", "", local).split("."))
            login = f"{local} ({'PLAIN' if rng.random() < 0.8 else 'LOGIN'})"
        # header recipients: the envelope recipients (one maybe Bcc) plus some outsiders
        vis = [addrs[i] for i in rcpt_idx]
        if k > 1 and rng.random() < 0.15:
            vis = vis[:-1]  # last one was Bcc'd
        vis += [f"{rng.choice(FIRST)}@{rng.choice(EXT_DOMAINS)}" for _ in range(rng.choice((0, 0, 0, 1, 2)))]
        if k == 1 and rng.random() < 0.1:
            vis = [f"team-{rng.choice(TOPICAL)}@lists.example.com"]  # delivered via a list
        nto = max(1, min(len(vis), rng.randint(1, 3)))
        to_hdr, cc_hdr = vis[:nto], vis[nto:]
        to_first = re.sub(r"\d+", "", to_hdr[0].split("@")[0].split(".")[0]).title()
        while True:
            qid = "".join(rng.choice(QID_CHARS) for _ in range(10))
            if qid not in qids:
                qids.add(qid)
                break
        date = rfc2822(ts)
        msgid = f"<{rng.getrandbits(64):016x}.{ts}@{from_addr.split('@')[1]}>"
        nonascii = rng.random() < 0.08
        w.new_topic()
        if recent and rng.random() < 0.3:
            rid, rsubj, rdate, rfrom = rng.choice(recent[-200:])
            subject = rsubj if rsubj.startswith("Re: ") else "Re: " + rsubj
        else:
            rid, rdate, rfrom = None, None, None
            subject = w.subject(nonascii)
        m = dict(nonascii=nonascii, external=external, from_addr=from_addr, from_name=from_name,
                 to_hdr=to_hdr, cc_hdr=cc_hdr, to_first=to_first, subject=subject, msgid=msgid,
                 date=date, qid=qid, rcpts=[addrs[i] for i in rcpt_idx], reply_to=rid,
                 reply_date=rdate, reply_from=rfrom,
                 alternative=rng.random() < 0.40, attach=rng.random() < 0.10)
        msg = build_message(rng, w, m)
        recent.append((msgid, subject, date, addr(from_name, from_addr)))
        if len(recent) > 1000:
            del recent[:500]
        quoted = FROM_LINE.sub(rb">\1", msg)
        if not quoted.endswith(b"\n"):
            quoted += b"\n"
        sep = f"From {env_from} {asctime(ts)}\n".encode()
        for i in rcpt_idx:
            env = [f"Return-Path: <{env_from}>", f"X-Envelope-To: <{addrs[i]}>"]
            if rng.random() < 0.03:  # the same mailbox was also addressed by an alias
                env.append(f"X-Envelope-To: <{users[i][0]}+lists@{users[i][1]}>")
            if login:
                env.append(f"X-Mailkeep-Login: {login}")
            env.append(f"X-Mailkeep-Queue-Id: {qid}")
            env.append(f"X-Mailkeep-Received: by mx1.example.com via milter; {mailkeep_date(ts)}")
            block = ("\n".join(env) + "\n").encode()
            files[i].write(sep + block + quoted + b"\n")
            copy_sizes.append(len(block) + len(msg))
            stats["bytes"] += len(sep) + len(block) + len(quoted) + 1
        stats["copies"] += k
        stats["originals"] += 1
        stats["multi"] += k > 1
        stats["attach"] += m["attach"]
        stats["alt"] += m["alternative"]
        stats["nonascii"] += nonascii
        stats["login"] += login is not None
        orig_sizes.append(len(msg))
    for f in files:
        f.close()
    return stats, copy_sizes, orig_sizes


def read_mboxrd(path):
    """Strict mboxrd reader: yields each stored message's bytes, unquoted."""
    with open(path, "rb") as f:
        cur = None
        for line in f:
            if line.startswith(b"From "):
                if cur is not None:
                    yield b"".join(cur)[:-1]  # drop the separating empty line
                cur = []
            elif cur is not None:
                cur.append(line[1:] if re.match(rb">+From ", line) else line)
        if cur is not None:
            yield b"".join(cur)[:-1]


def check(args, expected):
    t = time.time()
    names = sorted(n for n in os.listdir(args.out) if re.fullmatch(r"user\d{4}\.mbox", n))
    n_mailbox = sum(len(mailbox.mbox(os.path.join(args.out, n), create=False)) for n in names)
    copies, bad = {}, 0
    n_strict = 0
    for n in names:
        for msg in read_mboxrd(os.path.join(args.out, n)):
            n_strict += 1
            # split off the envelope block: the lines up to X-Mailkeep-Received
            i = msg.index(b"\nX-Mailkeep-Received: ")
            j = msg.index(b"\n", i + 1)
            body = msg[j + 1:]
            qid = re.search(rb"X-Mailkeep-Queue-Id: (\S+)", msg[:j]).group(1)
            h = hashlib.sha256(body).digest()
            if copies.setdefault(qid, h) != h:
                bad += 1
    ok = n_mailbox == expected == n_strict and bad == 0
    print(f"check: mailbox.mbox reads {n_mailbox} messages, strict mboxrd reader {n_strict}, "
          f"expected {expected}; {len(copies)} distinct originals; {bad} copies differing from "
          f"their original; {time.time() - t:.1f} s -> {'OK' if ok else 'FAILED'}")
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--messages", type=int, required=True, help="stored messages in all (copies count)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--start", default="2025-07-01", help="first date (UTC), YYYY-MM-DD")
    p.add_argument("--end", default="2026-12-31", help="last date (UTC), YYYY-MM-DD")
    p.add_argument("--check", action="store_true", help="read the files back and check them")
    args = p.parse_args()
    if args.messages < 1 or not 2 <= args.users <= 9999:
        p.error("need --messages >= 1 and 2 <= --users <= 9999")
    ymd = lambda s: datetime.datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc)
    args.start, args.end = ymd(args.start), ymd(args.end) + datetime.timedelta(days=1)
    t = time.time()
    stats, copy_sizes, orig_sizes = generate(args)
    el = time.time() - t
    o = stats["originals"]
    print(f"messages (stored copies): {stats['copies']}")
    print(f"distinct originals:       {o} ({stats['multi']} = {100 * stats['multi'] / o:.1f}% multi-recipient)")
    print(f"total bytes (mbox files): {stats['bytes']} ({stats['bytes'] / 2**20:.1f} MiB) in {args.users} files")
    print(f"median size:              {statistics.median(copy_sizes):.0f} bytes per stored message "
          f"(envelope block included), {statistics.median(orig_sizes):.0f} per original")
    print(f"largest original:         {max(orig_sizes)} bytes")
    print(f"originals with attachment {100 * stats['attach'] / o:.1f}%, multipart/alternative "
          f"{100 * stats['alt'] / o:.1f}%, non-ASCII {100 * stats['nonascii'] / o:.1f}%, "
          f"with login {100 * stats['login'] / o:.1f}%")
    print(f"generated in {el:.1f} s")
    if args.check and not check(args, stats["copies"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
