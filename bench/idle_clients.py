#!/usr/bin/env python3
"""bench/idle_clients.py - hold N idle SMTP sessions open and report what
they cost the server in resident memory (see bench/idle_memory.sh).

Each session connects to HOST:PORT, reads the greeting, sends EHLO (and,
with --starttls, STARTTLS and EHLO again inside TLS) and reads the reply,
then stays idle. The server's RSS (VmRSS, summed over the process given
and all its descendants: a supervisor and its workers) is read before the
first connection and once every session is idle; the difference divided
by N is printed as KiB per connection. Everything is bounded by
--deadline; any refused, reset or failed session fails the run.
"""
import argparse
import errno
import os
import resource
import selectors
import socket
import ssl
import sys
import time


def process_tree(root):
    """root and every process below it, from the ppid field of /proc/*/stat."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_kib(root):
    """Sum of VmRSS (KiB) over root's tree, and how many processes."""
    total, count = 0, 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        count += 1
                        break
        except OSError:
            pass
    return total, count


class Session:
    """One client: a small state machine driven by the selector."""

    def __init__(self, sock, starttls):
        self.sock = sock  # the SSLSocket after STARTTLS
        self.fd = sock.fileno()  # the selector's key: wrapping keeps it
        self.buf = b""
        self.out = b""
        self.starttls = starttls
        self.step = "connect"

    def reply(self):
        """A complete (multi-line) reply from self.buf, or None."""
        lines = self.buf.split(b"\r\n")
        for i, line in enumerate(lines[:-1]):
            if len(line) < 4 or line[3:4] != b"-":
                self.buf = b"\r\n".join(lines[i + 1:])
                return line[:3]
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--pid", type=int, required=True,
                    help="the server's root process (RSS of its tree)")
    ap.add_argument("-s", "--connections", type=int, default=10000)
    ap.add_argument("--label", default="server")
    ap.add_argument("--starttls", action="store_true")
    ap.add_argument("--in-flight", type=int, default=200,
                    help="sessions being set up at the same time")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds between the last EHLO reply and the reading")
    ap.add_argument("--deadline", type=float, default=600.0)
    args = ap.parse_args()
    n = args.connections

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 64
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            sys.exit(f"idle_clients: RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    tls = None
    if args.starttls:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE

    deadline = time.monotonic() + args.deadline
    before, procs_before = rss_kib(args.pid)
    sel = selectors.DefaultSelector()
    idle, started, in_flight = [], 0, 0
    addr = (args.host, args.port)

    def fail(sess, why):
        sys.exit(f"idle_clients ({args.label}): session {started} of {n}: "
                 f"{why} (step {sess.step}, {len(idle)} idle)")

    def send(sess, data):
        sess.out += data
        flush(sess)

    def flush(sess):
        while sess.out:
            try:
                k = sess.sock.send(sess.out)
            except (BlockingIOError, ssl.SSLWantWriteError):
                break
            sess.out = sess.out[k:]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if sess.out else 0)
        sel.modify(sess.fd, events, sess)

    def advance(sess):
        """Act on what arrived; returns True once the session is idle."""
        while True:
            if sess.step == "handshake":
                try:
                    sess.sock.do_handshake()
                except ssl.SSLWantReadError:
                    sel.modify(sess.fd, selectors.EVENT_READ, sess)
                    return False
                except ssl.SSLWantWriteError:
                    sel.modify(sess.fd, selectors.EVENT_WRITE, sess)
                    return False
                sess.step = "ehlo2"
                sel.modify(sess.fd, selectors.EVENT_READ, sess)
                send(sess, b"EHLO bench.client\r\n")
                continue
            code = sess.reply()
            if code is None:
                return False
            if sess.step == "greeting":
                if code != b"220":
                    fail(sess, f"greeting {code!r}")
                sess.step = "ehlo"
                send(sess, b"EHLO bench.client\r\n")
            elif sess.step == "ehlo":
                if code != b"250":
                    fail(sess, f"EHLO reply {code!r}")
                if not sess.starttls:
                    return True
                sess.step = "starttls"
                send(sess, b"STARTTLS\r\n")
            elif sess.step == "starttls":
                if code != b"220":
                    fail(sess, f"STARTTLS reply {code!r}")
                sess.sock = tls.wrap_socket(sess.sock, do_handshake_on_connect=False)
                sess.step = "handshake"
            elif sess.step == "ehlo2":
                if code != b"250":
                    fail(sess, f"EHLO after STARTTLS {code!r}")
                return True

    while len(idle) < n:
        if time.monotonic() > deadline:
            sys.exit(f"idle_clients ({args.label}): deadline with {len(idle)} of {n} idle")
        while started < n and in_flight < args.in_flight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex(addr)
            if rc not in (0, errno.EINPROGRESS):
                sys.exit(f"idle_clients ({args.label}): connect: {os.strerror(rc)}")
            sess = Session(s, args.starttls)
            sel.register(sess.fd, selectors.EVENT_WRITE, sess)
            started += 1
            in_flight += 1
        for key, mask in sel.select(timeout=1.0):
            sess = key.data
            if sess.step == "connect":
                err = sess.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(sess, os.strerror(err))
                sess.step = "greeting"
                sel.modify(sess.fd, selectors.EVENT_READ, sess)
                continue
            if sess.out and mask & selectors.EVENT_WRITE and sess.step != "handshake":
                flush(sess)
                if not mask & selectors.EVENT_READ:
                    continue
            if sess.step != "handshake":
                try:
                    data = sess.sock.recv(4096)
                except (BlockingIOError, ssl.SSLWantReadError):
                    continue
                except OSError as e:
                    fail(sess, str(e))
                if not data:
                    fail(sess, "the server closed the connection")
                sess.buf += data
            if advance(sess):
                sel.unregister(sess.fd)
                idle.append(sess)
                in_flight -= 1

    time.sleep(args.settle)
    after, procs = rss_kib(args.pid)
    # Every session must still be open and quiet: a server that dropped
    # or answered some of them would measure less than it holds.
    for sess in idle:
        try:
            data = sess.sock.recv(1)
        except (BlockingIOError, ssl.SSLWantReadError):
            continue
        except OSError as e:
            sys.exit(f"idle_clients ({args.label}): an idle session: {e}")
        sys.exit(f"idle_clients ({args.label}): an idle session got "
                 f"{'EOF' if not data else 'bytes'} from the server")
    per = (after - before) / n
    print(f"{args.label}\t{n}\t{before}\t{after}\t{per:.2f}\t{procs}")
    for sess in idle:
        sess.sock.close()


if __name__ == "__main__":
    main()
