"""A scripted milter for the tests: the filter side of the Sendmail milter
protocol (version 6), written here so that every action and every misbehaviour
can be asked for.

It listens on 127.0.0.1 (a free port) or on a unix socket, answers option
negotiation with the actions, protocol flags and macro lists it is given,
records everything the MTA sends (commands in order, macros, the connect
data, HELO, MAIL and RCPT arguments, header fields with their raw values,
the body bytes) and answers each command from a script:

    script = {"E": [add_header("X-Scanned", "yes"), CONTINUE],
              "R": lambda conn, args: [REJECT] if args[0] == "<bad@x>" else
                   [CONTINUE]}

A script entry is a list of items sent in order, or a function of
(connection, parsed command) that returns one.  Items are packets (bytes,
made by the helpers below) or the special actions CLOSE (close the
connection), GARBAGE (bytes that are no milter packet) and Stall(seconds)
(say nothing that long, then go on).  Commands without an entry are
answered CONTINUE when the protocol wants an answer.  Standard library
only; every socket has a timeout and every wait is bounded.
"""

import os
import socket
import struct
import threading
import time

# --- packets ------------------------------------------------------------------


def packet(cmd, data=b""):
    if isinstance(cmd, str):
        cmd = cmd.encode("ascii")
    return struct.pack(">I", len(data) + 1) + cmd + data


def _z(s):
    if isinstance(s, str):
        s = s.encode("utf-8")
    return s + b"\0"


CONTINUE = packet("c")
ACCEPT = packet("a")
REJECT = packet("r")
TEMPFAIL = packet("t")
DISCARD = packet("d")
PROGRESS = packet("p")
SKIP = packet("s")
SHUTDOWN = packet("4")


def replycode(text):
    return packet("y", _z(text))


def add_header(name, value):
    return packet("h", _z(name) + _z(value))


def insert_header(index, name, value):
    return packet("i", struct.pack(">I", index) + _z(name) + _z(value))


def change_header(index, name, value):
    """index is 1-based among the fields called name; value "" deletes."""
    return packet("m", struct.pack(">I", index) + _z(name) + _z(value))


def replace_body(chunk):
    return packet("b", chunk)


def add_rcpt(rcpt, args=None):
    if args is None:
        return packet("+", _z(rcpt))
    return packet("2", _z(rcpt) + _z(args))


def delete_rcpt(rcpt):
    return packet("-", _z(rcpt))


def change_from(sender, args=None):
    return packet("e", _z(sender) + (_z(args) if args is not None else b""))


def quarantine(reason):
    return packet("q", _z(reason))


CLOSE = "close"
GARBAGE = "garbage"


class Stall:
    def __init__(self, seconds):
        self.seconds = seconds


# Actions and protocol flags (SMFIF_*, SMFIP_*).
ACTIONS_ALL = 0x1FF
SMFIP_NOCONNECT = 0x1
SMFIP_NOHELO = 0x2
SMFIP_NOMAIL = 0x4
SMFIP_NORCPT = 0x8
SMFIP_NOBODY = 0x10
SMFIP_NOHDRS = 0x20
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NODATA = 0x200
SMFIP_SKIP = 0x400
SMFIP_NR_CONN = 0x1000
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_DATA = 0x10000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000

# Which reply flag silences which command.
_NO_REPLY = {"C": SMFIP_NR_CONN, "H": SMFIP_NR_HELO, "M": SMFIP_NR_MAIL,
             "R": SMFIP_NR_RCPT, "T": SMFIP_NR_DATA, "L": SMFIP_NR_HDR,
             "N": SMFIP_NR_EOH, "B": SMFIP_NR_BODY}
# Commands that get no answer at all.
_SILENT = {"D", "A", "Q", "K"}


# --- one connection -------------------------------------------------------------


class Connection:
    """What one MTA connection sent, in order."""

    def __init__(self):
        self.events = []  # (cmd, parsed)
        self.optneg = None  # (version, actions, protocol) the MTA offered
        self.closed = threading.Event()
        self.lock = threading.Lock()

    def commands(self):
        with self.lock:
            return [c for c, _ in self.events]

    def of(self, cmd):
        with self.lock:
            return [p for c, p in self.events if c == cmd]

    def macros(self, cmd):
        """The macros sent before cmd (merged, the last value wins)."""
        out = {}
        for target, values in self.of("D"):
            if target == cmd:
                out.update(values)
        return out

    @property
    def headers(self):
        return self.of("L")

    @property
    def body(self):
        return b"".join(self.of("B"))


def _strings(data):
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts = parts[:-1]
    return [p.decode("utf-8", "replace") for p in parts]


def _parse(cmd, data):
    if cmd == "O":
        return struct.unpack(">III", data[:12])
    if cmd == "D":
        target = chr(data[0])
        items = _strings(data[1:])
        return target, dict(zip(items[0::2], items[1::2]))
    if cmd == "C":
        host, rest = data.split(b"\0", 1)
        family = chr(rest[0])
        if family == "U":
            return host.decode(), family, None, None
        port = struct.unpack(">H", rest[1:3])[0]
        addr = rest[3:].rstrip(b"\0").decode()
        return host.decode(), family, port, addr
    if cmd == "L":
        name, value = data.split(b"\0", 1)
        return name.decode("utf-8", "replace"), value[:-1].decode(
            "utf-8", "replace")
    if cmd == "B":
        return data
    if cmd in ("H", "M", "R"):
        return _strings(data)
    return data


class MilterServer:
    """Run the scripted milter for the duration of a `with` block."""

    def __init__(self, script=None, unix_path=None, actions=ACTIONS_ALL,
                 protocol=0, macro_lists=None, version=6,
                 optneg_reply=None):
        self.script = script or {}
        self.actions = actions
        self.protocol = protocol
        self.macro_lists = macro_lists or {}
        self.version = version
        self.optneg_reply = optneg_reply  # items instead of the answer
        self.connections = []
        self._stop = threading.Event()
        self._threads = []
        self.unix_path = unix_path
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            self.sock.bind(unix_path)
            self.socket = "unix:" + unix_path
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
            self.socket = "inet:127.0.0.1:%d" % self.port
        self.sock.listen(16)
        self.sock.settimeout(0.2)

    def __enter__(self):
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        self._stop.set()
        for t in list(self._threads):
            t.join(10)
        try:
            self.sock.close()
        except OSError:
            pass
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)

    def wait_connections(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while len(self.connections) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.connections

    def wait_command(self, conn, cmd, timeout=10.0):
        deadline = time.monotonic() + timeout
        while cmd not in conn.commands() and time.monotonic() < deadline:
            time.sleep(0.02)
        return cmd in conn.commands()

    # --- internals

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn = Connection()
            self.connections.append(conn)
            t = threading.Thread(target=self._serve, args=(s, conn),
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _read_exact(self, s, n):
        buf = b""
        while len(buf) < n:
            if self._stop.is_set():
                return None
            try:
                chunk = s.recv(n - len(buf))
            except socket.timeout:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _send_items(self, s, conn, items):
        """Send script items; False once the connection is to end."""
        for item in items:
            if item == CLOSE:
                return False
            if item == GARBAGE:
                s.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                continue
            if isinstance(item, Stall):
                end = time.monotonic() + item.seconds
                while time.monotonic() < end and not self._stop.is_set():
                    time.sleep(0.05)
                continue
            s.sendall(item)
        return True

    def _optneg_answer(self):
        data = struct.pack(">III", self.version, self.actions, self.protocol)
        for stage, names in sorted(self.macro_lists.items()):
            data += struct.pack(">I", stage) + _z(names)
        return [packet("O", data)]

    def _serve(self, s, conn):
        s.settimeout(0.2)
        try:
            while not self._stop.is_set():
                head = self._read_exact(s, 4)
                if head is None:
                    break
                (n,) = struct.unpack(">I", head)
                if n == 0 or n > 1 << 22:
                    break
                raw = self._read_exact(s, n)
                if raw is None:
                    break
                cmd = chr(raw[0])
                parsed = _parse(cmd, raw[1:])
                with conn.lock:
                    conn.events.append((cmd, parsed))
                if cmd == "O":
                    conn.optneg = parsed
                    items = self.optneg_reply or self._optneg_answer()
                elif cmd == "Q":
                    break
                elif cmd in _SILENT:
                    continue
                else:
                    entry = self.script.get(cmd)
                    if callable(entry):
                        items = entry(conn, parsed)
                    elif entry is not None:
                        items = entry
                    elif self.protocol & _NO_REPLY.get(cmd, 0):
                        items = []
                    else:
                        items = [CONTINUE]
                if not self._send_items(s, conn, items):
                    break
        except OSError:
            pass  # the MTA closed first
        finally:
            conn.closed.set()
            try:
                s.close()
            except OSError:
                pass
