"""Shared harness for postern's integration tests.

Starts the real postern binary on a free loopback port with a temporary
main config, plugins.d, spool dir and maildir root, and gives the tests a
raw SMTP client, maildir/envelope readers and a log watcher.  Python 3
standard library only.  Every wait is bounded and every socket has a
timeout, so a broken server fails a test instead of hanging it.

A suite checks first for every program it runs (require_programs() in
its setUpModule): a missing one fails the suite with one line naming the
program and its Debian package; nothing is skipped.  No test resolves a
name: clients connect to 127.0.0.1 or ::1 and say who they are
(smtplib's local_hostname, swaks --helo and --from).

Environment (set by tests/meson.build):
  POSTERN_BIN              the postern executable
  POSTERN_MODULE_DIR       directory of the bundled modules (.so)
  POSTERN_TEST_PLUGIN_DIR  directory of the test modules (.so)
  POSTERN_SOURCE_DIR       the source tree
When run by hand without them, POSTERN_BUILD_DIR (default <source>/build)
is used to find the same things.
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

SOURCE_DIR = os.environ.get(
    "POSTERN_SOURCE_DIR",
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
)
BUILD_DIR = os.environ.get("POSTERN_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
POSTERN_BIN = os.environ.get("POSTERN_BIN", os.path.join(BUILD_DIR, "postern"))
# e.g. POSTERN_WRAPPER="valgrind --leak-check=full --errors-for-leak-kinds=definite"
# runs the daemon under valgrind; its error summary is checked at stop.
WRAPPER = os.environ.get("POSTERN_WRAPPER", "").split()
MODULE_DIR = os.environ.get("POSTERN_MODULE_DIR", os.path.join(BUILD_DIR, "modules"))
TEST_PLUGIN_DIR = os.environ.get(
    "POSTERN_TEST_PLUGIN_DIR", os.path.join(BUILD_DIR, "tests", "plugins")
)

# A test run from a systemd service must not have the postern it starts
# talk to that service's manager (sd_notify, inherited sockets):
# test_systemd.py sets these itself.
for _var in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
             "WATCHDOG_USEC", "WATCHDOG_PID"):
    os.environ.pop(_var, None)

HOSTNAME = "mx.postern.test"
START_TIMEOUT = 30.0 if WRAPPER else 10.0
STOP_TIMEOUT = 30.0 if WRAPPER else 5.0
IO_TIMEOUT = 10.0
# How long a test waits for what a configured timer (a timeout, a delay)
# brings about: a guard against a hang, never a measure of speed.  What a
# timer test measures is a lower bound: it did not fire before its time.
TIMER_GUARD = 30.0
# Allowance for reading the clock in two processes (the server's loop
# time and this process's time.monotonic()).
TIMER_SLACK = 0.02

# Lines a sanitizer writes when it finds a bug; any of them fails the test.
SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
)


# --- programs the tests run ---------------------------------------------------

# Every program a test runs and the Debian 12 package it comes in;
# .ci/bootstrap installs them all.
DEBIAN_PACKAGES = {
    "swaks": "swaks",
    "certtool": "gnutls-bin",
    "gnutls-cli": "gnutls-bin",
    "meson": "meson",
    "pkg-config": "pkg-config",
    "cc": "gcc",
    "valgrind": "valgrind",
    "strace": "strace",
    "dnsmasq": "dnsmasq-base",  # /usr/sbin; see dns_server.py
    "nginx": "nginx-light",  # /usr/sbin; an HTTP/2 server for test_http2.py
    "smtp-sink": "postfix",  # /usr/sbin; test_forward.py
    # /usr/sbin, /usr/bin; real milters (real_milters.py, test_milter_real.py)
    "opendkim": "opendkim",
    "opendkim-genkey": "opendkim-tools",
    "rspamd": "rspamd",
    "haproxy": "haproxy",  # /usr/sbin; a balancer for test_proxy.py
    "prometheus": "prometheus",  # scrapes /metrics in test_metrics.py
    # test_install.py (the unit, offline) and test_man_pages.py
    "systemd-analyze": "systemd",
    "man": "man-db",
    "groff": "groff-base",
}

# swaks looks up its own host name (gethostbyname(hostname())) when it
# starts, even when told --helo and --from, so a slow resolver would stall
# every swaks run.  A Sys::Hostname that refuses to load turns that off.
SWAKS_PERL5LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "perl-no-hostname")


class MissingProgram(AssertionError):
    """A program a suite runs is not installed: the suite fails, no skip."""


def missing_program(name):
    """The one-line complaint about a program not on PATH, or None."""
    if shutil.which(name):
        return None
    package = DEBIAN_PACKAGES.get(name)
    if package:
        return "missing program: %s (Debian package: %s)" % (name, package)
    return "missing program: %s" % name


def require_programs(*names):
    """Fail at once, one line per missing program, naming its package.

    Call it from setUpModule() with every program the module runs, so a
    missing one stops the suite before any case runs."""
    missing = [m for m in map(missing_program, names) if m]
    if missing:
        raise MissingProgram("\n".join(missing))


def swaks(*args, timeout=30.0):
    """Run swaks without any name lookup; (exit status, its output)."""
    env = dict(os.environ)
    env["PERL5LIB"] = os.pathsep.join(
        p for p in (SWAKS_PERL5LIB, env.get("PERL5LIB")) if p)
    try:
        r = subprocess.run(["swaks", *args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("swaks %s: no exit within %.0f s"
                             % (" ".join(args), timeout)) from None
    return r.returncode, r.stdout.decode("utf-8", "replace")


def require_swaks_tls():
    """swaks does TLS only with Net::SSLeay, which its package merely
    recommends."""
    require_programs("swaks")
    rc, out = swaks("--support")
    if not re.search(r"^=== TLS supported", out, re.M):
        raise MissingProgram("swaks cannot do TLS: install libnet-ssleay-perl "
                             "(swaks --support says: %s)"
                             % " ".join(l for l in out.splitlines()
                                        if "TLS" in l).strip())


# --- ports, waiting ------------------------------------------------------------


def free_port():
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_listening(port):
    """True when something listens on 127.0.0.1:port, without connecting.

    Reading /proc/net/tcp avoids opening a session the server would count
    (connection limits, greet_pause)."""
    want = "0100007F:%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[1] == want and fields[3] == "0A":
                    return True
        return False
    except OSError:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False


def wait_until(pred, timeout, interval=0.05):
    """Poll pred() until it is truthy or timeout seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


_LOG_FIELD = re.compile(r' ([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|[^ "]*)(?= |$)')


def _log_unescape(quoted):
    """The bytes of a value written by postern_log_value(): \\" \\\\ \\xNN."""
    out = bytearray()
    body = quoted[1:-1]
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("ascii")
            i += 1
        elif body[i + 1] == "x":
            out.append(int(body[i + 2:i + 4], 16))
            i += 4
        elif body[i + 1] in "\"\\":
            out += body[i + 1].encode("ascii")
            i += 2
        else:
            raise ValueError("bad escape in %r" % quoted)
    return bytes(out)


def parse_log_line(line):
    """Split a key=value log line strictly: (event, {key: value}).

    The line is "TIME LEVEL SID EVENT" and then nothing but " key=value"
    fields, each value bare or quoted as postern_log_value() writes it;
    quoted values are returned unescaped (bytes decoded as UTF-8 with
    replacement).  A line with anything else, or with a key twice, raises
    ValueError: that is what a forged field looks like."""
    parts = line.split(" ", 4)
    if len(parts) < 4:
        raise ValueError("not a log line: %r" % line)
    event = parts[3]
    rest = " " + parts[4] if len(parts) == 5 else ""
    fields = {}
    pos = 0
    while pos < len(rest):
        m = _LOG_FIELD.match(rest, pos)
        if not m:
            raise ValueError("not key=value at %r in %r" % (rest[pos:], line))
        key, value = m.group(1), m.group(2)
        if key in fields:
            raise ValueError("field %s twice in %r" % (key, line))
        if value.startswith('"'):
            value = _log_unescape(value).decode("utf-8", "replace")
        fields[key] = value
        pos = m.end()
    return event, fields


def deep_merge(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def test_plugin_available(name):
    return os.path.isfile(os.path.join(TEST_PLUGIN_DIR, name + ".so"))


# --- the server ---------------------------------------------------------------


class ServerError(AssertionError):
    pass


class Server:
    """Run postern for the duration of a `with` block.

    plugins: list of (file name, dict) or a dict {file name: dict}, written
    to plugins.d in that order (the server sorts them by name anyway).
    config: merged (deeply) over the base main config.
    The string "{maildir}" / "{spool}" / "{tmp}" inside plugin configs is
    replaced by the matching path, so tests can write
    {"module": "store_file", "config": {"root": "{maildir}"}}.
    """

    def __init__(self, plugins=None, config=None, start=True):
        self.tmp = tempfile.mkdtemp(prefix="postern-it-")
        self.maildir = os.path.join(self.tmp, "maildir")
        self.spool = os.path.join(self.tmp, "spool")
        self.plugins_dir = os.path.join(self.tmp, "plugins.d")
        self.config_path = os.path.join(self.tmp, "postern.json")
        self.log_path = os.path.join(self.tmp, "postern.log")
        os.makedirs(self.maildir)
        os.makedirs(self.spool)
        os.makedirs(self.plugins_dir)
        self.port = free_port()
        self.proc = None
        self._log = None
        self._autostart = start
        # Set by tests that kill workers or make them fail on purpose.
        self.worker_deaths_expected = False
        self.config = {
            "hostname": HOSTNAME,
            "listen": [{"address": "127.0.0.1", "port": self.port, "tls": "none"}],
            "spool_dir": self.spool,
            "plugins_dir": self.plugins_dir,
            "module_path": [MODULE_DIR, TEST_PLUGIN_DIR],
            "log_level": "debug",
            # No test may depend on the machine's resolver: reverse
            # lookups are off unless a test turns them on (test_dns.py,
            # with its own DNS server).
            "dns": {"reverse": False},
        }
        if config:
            deep_merge(self.config, config)
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        items = plugins.items() if isinstance(plugins, dict) else (plugins or [])
        for name, body in items:
            self.write_plugin(name, body)

    def _subst(self, value):
        if isinstance(value, str):
            return (
                value.replace("{maildir}", self.maildir)
                .replace("{spool}", self.spool)
                .replace("{tmp}", self.tmp)
            )
        if isinstance(value, list):
            return [self._subst(v) for v in value]
        if isinstance(value, dict):
            return {k: self._subst(v) for k, v in value.items()}
        return value

    def write_plugin(self, name, body):
        if not name.endswith(".json"):
            name += ".json"
        path = os.path.join(self.plugins_dir, name)
        with open(path, "w") as f:
            if isinstance(body, str):
                f.write(body)
            else:
                json.dump(self._subst(body), f, indent=2)
        return path

    # lifecycle

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            WRAPPER + [POSTERN_BIN, "-c", self.config_path],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    "postern exited with %s during start-up:\n%s"
                    % (self.proc.returncode, self.log_text())
                )
            if is_listening(self.port):
                return self
            time.sleep(0.05)
        self._kill()
        raise ServerError(
            "postern did not listen on port %d within %.0f s:\n%s"
            % (self.port, START_TIMEOUT, self.log_text())
        )

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass

    def stop(self):
        """SIGTERM, SIGKILL after 5 s; returns a list of problems found."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append(
                    "postern did not exit within %.0f s of SIGTERM" % STOP_TIMEOUT
                )
                self._kill()
        rc = self.proc.returncode
        if rc is not None and rc < 0 and rc != -signal.SIGTERM:
            problems.append(
                "postern died from signal %s" % signal.Signals(-rc).name
            )
        if self._log:
            self._log.close()
            self._log = None
        text = self.log_text()
        for line in text.splitlines():
            # A worker that crashes is restarted by the supervisor, so its
            # death shows only in the log.
            if " worker_died " in line and not self.worker_deaths_expected:
                problems.append("a worker died: " + line.strip())
            if any(p in line for p in SANITIZER_PATTERNS):
                problems.append("sanitizer: " + line.strip())
            if "ERROR SUMMARY:" in line and "ERROR SUMMARY: 0 errors" not in line:
                problems.append("valgrind: " + line.strip())
        return problems

    def __enter__(self):
        if self._autostart:
            try:
                self.start()
            except BaseException:
                self.cleanup()
                raise
        return self

    def __exit__(self, exc_type, exc, tb):
        problems = self.stop()
        if exc_type is not None or problems:
            sys.stderr.write(
                "\n--- postern log (%s) ---\n%s\n--- end of log ---\n"
                % (self.log_path, self.log_tail())
            )
        keep = os.environ.get("POSTERN_KEEP_TMP")
        if not keep:
            self.cleanup()
        if problems and exc_type is None:
            raise ServerError("; ".join(problems))
        return False

    def cleanup(self):
        # A test may have made parts of the tree read-only.
        for root, dirs, files in os.walk(self.tmp):
            for d in dirs:
                try:
                    os.chmod(os.path.join(root, d), 0o700)
                except OSError:
                    pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def worker_pids(self):
        """The supervisor's children (its workers, and a metrics process
        when configured), as strings."""
        pid = self.proc.pid
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                return f.read().split()
        except OSError:
            return []

    # logs

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=80):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_log(self, pattern, timeout=5.0):
        """Wait for a log line matching the regex; the match, or None."""
        rx = re.compile(pattern)

        def look():
            for line in self.log_text().splitlines():
                m = rx.search(line)
                if m:
                    return m
            return None

        return wait_until(look, timeout)

    def count_log(self, pattern):
        rx = re.compile(pattern)
        return sum(1 for line in self.log_text().splitlines() if rx.search(line))

    def log_matches(self, pattern):
        """The matches of a regex, one per matching line, in log order.

        The loop writes each line whole as its event happens, so for
        events of the loop (hooks starting and resuming, replies) the
        order of the lines is the order of the events."""
        rx = re.compile(pattern)
        return [m for m in map(rx.search, self.log_text().splitlines()) if m]

    # clients

    def client(self, greet=True, timeout=IO_TIMEOUT):
        c = Client(self.port, timeout=timeout)
        if greet:
            c.greeting = c.expect(220)
        return c

    def smtplib(self, timeout=IO_TIMEOUT):
        import smtplib

        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test",
                            timeout=timeout)

    # storage

    def messages(self, root=None):
        return maildir_messages(root or self.maildir)

    def wait_messages(self, n, root=None, timeout=5.0):
        """Wait until the maildir holds at least n messages; the list."""
        wait_until(lambda: len(self.messages(root)) >= n, timeout)
        return self.messages(root)

    def spool_files(self):
        return files_under(self.spool)


# --- storage readers ----------------------------------------------------------


def files_under(top):
    out = []
    for root, dirs, files in os.walk(top):
        for name in files:
            out.append(os.path.join(root, name))
    return sorted(out)


def maildir_messages(root):
    """Paths of the delivered messages (new/ and cur/) of one maildir."""
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(root, sub)
        if os.path.isdir(d):
            out.extend(
                os.path.join(d, n) for n in os.listdir(d) if not n.startswith(".")
            )
    return sorted(out)


def maildir_tmp(root):
    d = os.path.join(root, "tmp")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def envelope_path(root, message_path):
    return os.path.join(root, "envelope", os.path.basename(message_path) + ".json")


def read_envelope(root, message_path):
    with open(envelope_path(root, message_path)) as f:
        return json.load(f)


def split_added_headers(data, body):
    """Split a stored message into the headers postern prepended and the
    body the client sent; fails unless the message ends with that body.
    Returns the list of unfolded header lines (str)."""
    if not data.endswith(body):
        raise AssertionError(
            "stored message does not end with the sent body:\n%r" % data[-300:]
        )
    prefix = data[: len(data) - len(body)]
    if prefix and not prefix.endswith(b"\r\n"):
        raise AssertionError("added headers do not end with CRLF: %r" % prefix)
    headers = []
    for raw in prefix.split(b"\r\n")[:-1]:
        line = raw.decode("utf-8", "replace")
        if line[:1] in (" ", "\t") and headers:
            headers[-1] += " " + line.strip()
        elif re.match(r"^[!-9;-~]+:", line):
            headers.append(line)
        else:
            raise AssertionError("not a header line in the added prefix: %r" % line)
    return headers


RECEIVED_RX = re.compile(
    r"^Received: from (?P<helo>\S+) \((?P<rdns>\S+) \[(?P<ip>[0-9a-fA-F.:]+)\]\)"
    r" by (?P<by>\S+) \(postern\) with (?P<proto>[A-Z0-9]+) id (?P<id>\S+)"
    r"(?: for <?(?P<rcpt>[^>;\s]+)>?)?; (?P<date>.+)$"
)


# --- the raw client -----------------------------------------------------------


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines  # text after "NNN-" / "NNN "

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enhanced(self):
        """The enhanced status code of the first line, or None."""
        m = re.match(r"^([245]\.\d{1,3}\.\d{1,3})(\s|$)", self.lines[0] if self.lines else "")
        return m.group(1) if m else None

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.lines)


class ProtocolError(AssertionError):
    pass


class Client:
    """A raw SMTP client over a blocking socket with a timeout."""

    def __init__(self, port, host="127.0.0.1", timeout=IO_TIMEOUT):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.closed_by_peer = False
        self.greeting = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Vanish: close with a reset, as a crashed or killed client does
        (a plain close is only a half-close the server answers to)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(min(remaining, self.timeout))
        chunk = self.sock.recv(65536)
        if not chunk:
            self.closed_by_peer = True
        self.buf += chunk
        return chunk

    def read_line(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise ProtocolError("reply line over 1 MiB")
            if not self._fill(deadline):
                raise ProtocolError(
                    "connection closed while waiting for a reply (got %r)" % self.buf
                )
        line, self.buf = self.buf.split(b"\n", 1)
        if not line.endswith(b"\r"):
            raise ProtocolError("reply line without CRLF: %r" % line)
        return line[:-1].decode("utf-8", "replace")

    def reply(self, timeout=None):
        """Read one (possibly multi-line) reply."""
        lines = []
        code = None
        for _ in range(1000):
            line = self.read_line(timeout)
            m = re.match(r"^(\d{3})([ -])(.*)$", line)
            if not m:
                raise ProtocolError("malformed reply line: %r" % line)
            if code is None:
                code = m.group(1)
            elif m.group(1) != code:
                raise ProtocolError(
                    "code changed inside a multi-line reply: %r" % (lines + [line])
                )
            lines.append(m.group(3))
            if m.group(2) == " ":
                return Reply(int(code), lines)
        raise ProtocolError("reply of over 1000 lines")

    def expect(self, code, timeout=None):
        r = self.reply(timeout)
        ok = r.code == code if isinstance(code, int) else code(r.code)
        if not ok:
            raise ProtocolError("expected %s, got %r" % (code, r))
        return r

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply(timeout)

    def cmd_expect(self, line, code, timeout=None):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        try:
            return self.expect(code, timeout)
        except ProtocolError as e:
            raise ProtocolError("%s -> %s" % (line[:80], e)) from None

    def ehlo(self, name="client.test"):
        return self.cmd_expect("EHLO " + name, 250)

    def wait_closed(self, timeout=5.0):
        """True if the server closes the connection within timeout (any
        bytes received meanwhile are kept in self.buf)."""
        deadline = time.monotonic() + timeout
        try:
            while not self.closed_by_peer and time.monotonic() < deadline:
                self._fill(deadline)
        except socket.timeout:
            return False
        except ConnectionResetError:
            self.closed_by_peer = True
        return self.closed_by_peer

    def transaction(self, sender, rcpts, body, ehlo=False):
        """MAIL/RCPT/DATA with a body given unstuffed (CRLF line ends);
        returns the reply to the end of data."""
        if ehlo:
            self.ehlo()
        self.cmd_expect("MAIL FROM:<%s>" % sender, 250)
        for r in rcpts:
            self.cmd_expect("RCPT TO:<%s>" % r, 250)
        self.cmd_expect("DATA", 354)
        self.send(dot_stuff(body) + b".\r\n")
        return self.reply()


def dot_stuff(body):
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    out = re.sub(rb"(^|\r\n)\.", rb"\1..", body)
    return out


# --- common plugin configs ----------------------------------------------------


class SlowSyscalls:
    """strace attached to a running process and its threads: each call of
    the named syscalls waits `seconds` before it runs (fault injection),
    for as long as the context lasts; then strace detaches and the process
    runs on. Every syscall of the process stops for strace meanwhile, so
    everything is somewhat slower, the named calls much slower."""

    def __init__(self, pid, syscalls, seconds):
        self.argv = [shutil.which("strace"), "-f", "-p", str(pid),
                     "-o", "/dev/null", "-e", "trace=" + syscalls,
                     "-e", "inject=%s:delay_enter=%d"
                     % (syscalls, int(seconds * 1e6))]

    def __enter__(self):
        self.tracer = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        # strace says "Process N attached" once per thread.
        line = self.tracer.stderr.readline()
        if b"attached" not in line:
            self.tracer.kill()
            self.tracer.wait(10)
            raise AssertionError("strace did not attach: %r" % line)
        return self

    def __exit__(self, *exc):
        self.tracer.terminate()  # detaches
        self.tracer.wait(10)


def store_plugin(**extra):
    cfg = {"root": "{maildir}", "fsync": False}
    cfg.update(extra)
    return {"module": "store_file", "config": cfg}


def async_plugin(hooks):
    return {"module": "test_async", "config": {"hooks": hooks}}


class PosternTestCase(unittest.TestCase):
    """Base class: fails everything when the binary is missing."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        if not os.access(POSTERN_BIN, os.X_OK):
            raise AssertionError("postern binary not found: %s (build it: "
                                 "ninja -C build)" % POSTERN_BIN)
        if WRAPPER:
            require_programs(WRAPPER[0])

    def require_plugin(self, name):
        if not test_plugin_available(name):
            self.fail("test plugin %s.so not found in %s (built with the "
                      "tests: ninja -C build)" % (name, TEST_PLUGIN_DIR))

    def assertStoredBody(self, data, body, helo="client.test", rcpt=None,
                         proto="ESMTP", rdns="unknown"):
        """data is the stored file: postern's headers, then exactly body.
        rdns: the client name expected in Received ("unknown": none; the
        base config turns reverse lookups off). Returns the added header
        lines."""
        headers = split_added_headers(data, body)
        self.assertTrue(headers, "no Received header was added")
        self.assertTrue(headers[0].startswith("Received:"),
                        "first added header is not Received: %r" % headers[0])
        m = RECEIVED_RX.match(headers[0])
        self.assertIsNotNone(m, "Received header not in the expected shape: %r"
                             % headers[0])
        self.assertEqual(m.group("helo"), helo)
        self.assertEqual(m.group("rdns"), rdns)
        self.assertEqual(m.group("ip"), "127.0.0.1")
        self.assertEqual(m.group("by"), HOSTNAME)
        if proto:
            self.assertEqual(m.group("proto"), proto)
        self.assertRegex(m.group("id"), r"^[0-9A-Za-z]+$")
        if rcpt:
            self.assertEqual(m.group("rcpt"), rcpt)
        # RFC 5322 date-time, e.g. "Sat, 22 Nov 2025 04:36:00 +0000"
        self.assertRegex(
            m.group("date"),
            r"^(\w{3}, )?\d{1,2} \w{3} \d{4} \d{2}:\d{2}(:\d{2})? [+-]\d{4}",
        )
        return headers


def main():
    """Run the calling module's tests.  A skipped test fails the run:
    a suite runs every case, or fails saying what it lacks."""
    result = unittest.main(verbosity=2, exit=False).result
    for test, reason in result.skipped:
        sys.stderr.write("skipped, which no test may be: %s: %s\n"
                         % (test.id(), reason))
    sys.exit(0 if result.wasSuccessful() and not result.skipped else 1)
