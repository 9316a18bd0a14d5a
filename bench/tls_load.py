#!/usr/bin/env python3
"""bench/tls_load.py - SMTP load over implicit TLS, one message per
connection, optionally resuming TLS sessions.

Each of --connections client threads (spread over --procs processes, as
one Python process saturates early) loops: connect, TLS handshake (with
--resume, offering the session its previous connection got), 220, EHLO,
MAIL, RCPT, DATA, the message, QUIT; until --messages messages in all got
250. A failed connection or a reply other than the expected one stops the
run. Prints one line of JSON: messages, seconds, msg_per_s, handshakes,
resumed (handshakes that were resumptions) and resumed_fraction.
--plain does the same without TLS (the peer that prices the handshake).

Not a test: nothing here passes or fails on speed.
"""

import argparse
import json
import multiprocessing
import socket
import ssl
import sys
import threading
import time


def read_reply(f, want):
    """Read one (possibly multi-line) reply; raise unless its code is want."""
    while True:
        line = f.readline(4096)
        if not line:
            raise ConnectionError("connection closed waiting for %d" % want)
        if len(line) < 4 or line[3:4] != b"-":
            break
    code = int(line[:3])
    if code != want:
        raise ConnectionError("expected %d, got %r" % (want, line))


def one_message(args, ctx, session, body):
    """One connection, one message; returns (reused, session)."""
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=30)
    sock = raw
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(raw, server_hostname=args.server_name,
                                   session=session if args.resume else None)
        f = sock.makefile("rb")
        read_reply(f, 220)
        sock.sendall(b"EHLO bench.client\r\n")
        read_reply(f, 250)
        sock.sendall(b"MAIL FROM:<a@example.org>\r\n")
        read_reply(f, 250)
        sock.sendall(b"RCPT TO:<b@example.com>\r\n")
        read_reply(f, 250)
        sock.sendall(b"DATA\r\n")
        read_reply(f, 354)
        sock.sendall(body)
        read_reply(f, 250)
        sock.sendall(b"QUIT\r\n")
        read_reply(f, 221)
        if ctx is None:
            return False, None
        # TLS 1.3 tickets arrive after the handshake: read by now.
        return sock.session_reused, sock.session
    finally:
        sock.close()


def worker_process(args, share, out):
    ctx = None
    if not args.plain:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if args.tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    body = (b"From: a@example.org\r\nTo: b@example.com\r\n"
            b"Subject: bench\r\n\r\n")
    line = b"x" * 78 + b"\r\n"
    body += line * max(1, args.size // len(line)) + b".\r\n"
    lock = threading.Lock()
    state = {"left": share, "handshakes": 0, "resumed": 0, "error": None}

    def run():
        session = None
        while True:
            with lock:
                if state["left"] <= 0 or state["error"]:
                    return
                state["left"] -= 1
            try:
                reused, session = one_message(args, ctx, session, body)
            except (OSError, ValueError) as e:
                with lock:
                    state["error"] = "%s: %s" % (type(e).__name__, e)
                return
            with lock:
                state["handshakes"] += 1
                state["resumed"] += 1 if reused else 0

    threads = [threading.Thread(target=run)
               for _ in range(args.connections // args.procs or 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put({k: state[k] for k in ("handshakes", "resumed", "error")})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--connections", type=int, default=20,
                   help="client threads in all")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--size", type=int, default=1024, help="body bytes")
    p.add_argument("--resume", action="store_true",
                   help="offer the previous connection's session")
    p.add_argument("--tls12", action="store_true", help="at most TLS 1.2")
    p.add_argument("--plain", action="store_true", help="no TLS at all")
    p.add_argument("--server-name", default="bench.postern.test")
    args = p.parse_args()
    args.procs = max(1, min(args.procs, args.connections))

    shares = [args.messages // args.procs] * args.procs
    shares[0] += args.messages - sum(shares)
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker_process,
                                     args=(args, n, out)) for n in shares]
    start = time.monotonic()
    for pr in procs:
        pr.start()
    results = [out.get() for _ in procs]
    secs = time.monotonic() - start
    for pr in procs:
        pr.join()
    errors = [r["error"] for r in results if r["error"]]
    done = sum(r["handshakes"] for r in results)
    resumed = sum(r["resumed"] for r in results)
    print(json.dumps({
        "messages": done, "seconds": round(secs, 3),
        "msg_per_s": round(done / secs, 1), "handshakes": done,
        "resumed": resumed,
        "resumed_fraction": round(resumed / done, 3) if done else 0.0,
        "errors": errors,
    }))
    return 1 if errors or done != args.messages else 0


if __name__ == "__main__":
    sys.exit(main())
