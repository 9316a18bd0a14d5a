#!/usr/bin/env python3
"""bench/smtp_load.py - SMTP load generator for bench/dns.sh.

Unlike smtp-source (one -f sender for the whole run), it varies the sender
per message: message k of connection c comes from
bench@d<(c + k) % domains>.bench.test, so every connection uses every
sender domain.  asyncio, no pipelining (each command is one round trip),
many messages per connection, one recipient per message.

    smtp_load.py HOST PORT [--connections 50] [--messages 4000]
                 [--size 10240] [--domains 50] [--rcpt b@example.com]
                 [--helo client.bench.test]

Prints one line: "<messages sent> <seconds> <failures> <client cpu s>".
A message counts as a failure when any reply is not the expected 2xx/3xx;
the connection then sends RSET and goes on.
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


async def main(args):
    line = b"x" * 78 + b"\r\n"
    payload = line * (args.size // len(line) + 1)
    body = (b"From: bench@bench.test\r\nTo: %s\r\nSubject: bench\r\n\r\n"
            % args.rcpt.encode()) + payload[:args.size] + b"\r\n.\r\n"
    stats = {"sent": 0, "failed": 0, "first_error": None}
    per = [args.messages // args.connections] * args.connections
    for i in range(args.messages % args.connections):
        per[i] += 1
    start = time.monotonic()
    await asyncio.gather(*(session(args, i, n, body, stats)
                           for i, n in enumerate(per) if n))
    secs = time.monotonic() - start
    t = os.times()
    print("%d %.3f %d %.2f" % (stats["sent"], secs, stats["failed"],
                               t.user + t.system))
    if stats["first_error"]:
        print("first error: %s" % stats["first_error"], file=sys.stderr)


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
    asyncio.run(main(p.parse_args()))
