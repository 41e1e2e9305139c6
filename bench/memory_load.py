#!/usr/bin/env python3
"""SMTP load for bench/memory.sh: SESSIONS concurrent sessions, each sending
one distinct message of SIZE bytes of incompressible content (base64 of
random bytes) to an SMTP server, all finishing together: every session sends
its whole message but the final dot, waits for the others, then all send the
dot at once, so the server holds every message at the same time.

Usage: memory_load.py PORT SESSIONS SIZE
Prints one line: "accepted N/SESSIONS in S s" and exits 1 unless every
session got 250 for its message.
"""

import base64
import os
import socket
import sys
import threading
import time

CHUNK = 1 << 20


def reply(f):
    """One (possibly multi-line) SMTP reply; returns its code."""
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3])


def expect(f, code, what):
    got = reply(f)
    if got != code:
        raise RuntimeError(f"{what}: {got}, wanted {code}")


def body(size, n):
    """SIZE bytes of message: headers, then 76-column base64 of random bytes,
    generated a megabyte at a time so the client stays small."""
    head = (
        f"From: load{n}@example.org\r\nTo: archive@example.com\r\n"
        f"Subject: memory load {n}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: application/octet-stream\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    yield head
    left = size - len(head)
    line = 78  # 76 base64 characters and CRLF
    while left > 0:
        lines = min(CHUNK // line, max(1, left // line))
        raw = base64.b64encode(os.urandom(57 * lines))
        out = b"".join(raw[i : i + 76] + b"\r\n" for i in range(0, len(raw), 76))
        out = out[:left]
        if not out.endswith(b"\r\n"):
            out = out[:-2] + b"\r\n" if len(out) >= 2 else b"\r\n"
        left -= len(out)
        yield out


def session(port, size, n, barrier, results):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=3600)
        f = s.makefile("rb")
        expect(f, 220, "greeting")
        s.sendall(b"EHLO load.test\r\n")
        expect(f, 250, "EHLO")
        s.sendall(f"MAIL FROM:<load{n}@example.org>\r\n".encode())
        expect(f, 250, "MAIL")
        s.sendall(b"RCPT TO:<archive@example.com>\r\n")
        expect(f, 250, "RCPT")
        s.sendall(b"DATA\r\n")
        expect(f, 354, "DATA")
        for part in body(size, n):
            s.sendall(part)
        barrier.wait()
        s.sendall(b".\r\n")
        results[n] = reply(f)
        s.sendall(b"QUIT\r\n")
        s.close()
    except Exception as e:  # noqa: BLE001 - reported, counted as a failure
        results[n] = repr(e)
        try:
            barrier.abort()
        except threading.BrokenBarrierError:
            pass


def main():
    port, sessions, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    barrier = threading.Barrier(sessions)
    results = [None] * sessions
    threads = [
        threading.Thread(target=session, args=(port, size, n, barrier, results))
        for n in range(sessions)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = sum(1 for r in results if r == 250)
    print(f"accepted {ok}/{sessions} in {time.monotonic() - started:.1f} s")
    bad = [r for r in results if r != 250]
    if bad:
        print(f"failures: {sorted(set(map(str, bad)))[:5]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
