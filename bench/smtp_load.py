#!/usr/bin/env python3
"""bench/smtp_load.py - SMTP load generator for bench/dns.sh.

Unlike smtp-source (one -f sender for the whole run), it varies the sender
per message: message k of connection c comes from
bench@d<(c + k) % domains>.bench.test, so every connection uses every
sender domain.  asyncio, no pipelining (each command is one round trip),
many messages per connection, one recipient per message.

    smtp_load.py HOST PORT [--connections 50] [--messages 4000]
                 [--size 10240] [--domains 50] [--rcpt b@example.com]
                 [--helo client.bench.test] [--procs 1]

Prints one line: "<messages sent> <seconds> <failures> <client cpu s>".
A message counts as a failure when any reply is not the expected 2xx/3xx;
the connection then sends RSET and goes on.  --procs N splits the
connections over N forked processes (one Python process is CPU-bound
near 4000 msg/s of 10 KB).
"""

import argparse
import asyncio
import os
import sys
import time


async def reply(reader):
    """Read one (possibly multi-line) reply, return its code."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3])


async def session(args, index, count, body, stats):
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        if await reply(reader) != 220:
            raise ConnectionError("no 220 greeting")
        writer.write(b"EHLO %s\r\n" % args.helo.encode())
        if await reply(reader) != 250:
            raise ConnectionError("EHLO refused")
        for k in range(count):
            dom = (index + k) % args.domains
            ok = True
            for cmd, want in (
                (b"MAIL FROM:<bench@d%d.bench.test>\r\n" % dom, 250),
                (b"RCPT TO:<%s>\r\n" % args.rcpt.encode(), 250),
                (b"DATA\r\n", 354),
            ):
                writer.write(cmd)
                code = await reply(reader)
                if code != want:
                    ok = False
                    if stats["first_error"] is None:
                        stats["first_error"] = "%s -> %d" % (cmd.strip(), code)
                    break
            if ok:
                writer.write(body)
                code = await reply(reader)
                if code != 250:
                    ok = False
                    if stats["first_error"] is None:
                        stats["first_error"] = "end of data -> %d" % code
            if not ok:
                stats["failed"] += 1
                writer.write(b"RSET\r\n")
                await reply(reader)
            stats["sent"] += 1
        writer.write(b"QUIT\r\n")
        await reply(reader)
    finally:
        writer.close()


async def run(args, indexes, per):
    line = b"x" * 78 + b"\r\n"
    payload = line * (args.size // len(line) + 1)
    body = (b"From: bench@bench.test\r\nTo: %s\r\nSubject: bench\r\n\r\n"
            % args.rcpt.encode()) + payload[:args.size] + b"\r\n.\r\n"
    stats = {"sent": 0, "failed": 0, "first_error": None}
    await asyncio.gather(*(session(args, i, per[i], body, stats)
                           for i in indexes if per[i]))
    return stats


def main(args):
    """Splits the connections over --procs processes (forked), sums up."""
    per = [args.messages // args.connections] * args.connections
    for i in range(args.messages % args.connections):
        per[i] += 1
    children = []
    start = time.monotonic()
    for p in range(args.procs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            code = 0
            try:
                st = asyncio.run(run(args, range(p, args.connections,
                                                 args.procs), per))
                msg = "%d %d %s" % (st["sent"], st["failed"],
                                    st["first_error"] or "")
            except Exception as e:  # noqa: BLE001 - reported by the parent
                msg = "0 0 %s" % e
                code = 1
            os.write(w, msg.encode())
            os._exit(code)
        os.close(w)
        children.append((pid, r))
    sent = failed = 0
    errors = []
    for pid, r in children:
        with os.fdopen(r, "rb") as f:
            parts = f.read().decode().split(" ", 2)
        _, status = os.waitpid(pid, 0)
        sent += int(parts[0])
        failed += int(parts[1])
        if len(parts) > 2 and parts[2]:
            errors.append(parts[2])
        if status != 0:
            errors.append("worker exit status %d" % status)
    secs = time.monotonic() - start
    t = os.times()
    print("%d %.3f %d %.2f" % (sent, secs, failed,
                               t.children_user + t.children_system))
    for e in errors:
        print("error: %s" % e, file=sys.stderr)
    return 1 if any("exit status" in e for e in errors) else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--size", type=int, default=10240)
    p.add_argument("--domains", type=int, default=50)
    p.add_argument("--rcpt", default="b@example.com")
    p.add_argument("--helo", default="client.bench.test")
    p.add_argument("--procs", type=int, default=1)
    sys.exit(main(p.parse_args()))
