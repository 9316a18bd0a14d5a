"""A real DNS server for integration tests: dnsmasq on 127.0.0.1.

Debian package: dnsmasq-base (the binary only, no service).  Call
require_dnsmasq() from setUpModule(): a missing dnsmasq fails the suite
with the harness's "missing program" line (it lives in /usr/sbin, which
a normal user's PATH may lack, so it is looked for there too).  The zone is
given as Python data, written to dnsmasq's command line at start, and the
server listens on a free port of 127.0.0.1 (UDP and TCP) until stop().

    from dns_server import DnsServer, SilentServer

    records = [
        ("example.test", "TXT", "v=spf1 -all"),        # one string
        ("split.test", "TXT", ["v=spf1 ", "-all"]),   # one record, two strings
        ("mx1.example.test", "A", "192.0.2.10"),
        ("mx1.example.test", "AAAA", "2001:db8::10"),
        ("example.test", "MX", (10, "mx1.example.test")),
        ("127.0.0.1", "PTR", "host.example.test"),     # address or .arpa name
        ("www.example.test", "CNAME", "example.test"),
    ]
    with DnsServer(records) as dns:
        config = {"dns": {"servers": [dns.server]}}   # "127.0.0.1:PORT"
        ...
        dns.queries()   # [("A", "mx1.example.test"), ...] asked so far

Answers:
  - a name with records of the type: NOERROR and the records (TTL `ttl`,
    default 300 s; dnsmasq sends no SOA, so negative answers carry none);
  - a name under one of `zones` with records of other types only: NOERROR
    without records (NODATA);
  - a name under `zones` with no record at all: NXDOMAIN;
  - a name outside `zones`: REFUSED.
  `zones` defaults to the last label of every record name plus
  in-addr.arpa and ip6.arpa ("test" above).

Caveat (dnsmasq): an A or AAAA record also answers PTR queries for its
address, naming its owner, unless a PTR record is given for that address.
Give the PTR records explicitly whenever a test depends on reverse lookups.

SilentServer() binds a UDP port (and a TCP one) on 127.0.0.1 and never
answers: a resolver pointed at it times out.  Both classes are context
managers; stop() / close() may be called more than once.
"""

import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

START_TIMEOUT = 10.0


def dnsmasq_path():
    """The dnsmasq binary, or None."""
    for path in (shutil.which("dnsmasq"), "/usr/sbin/dnsmasq"):
        if path and os.access(path, os.X_OK):
            return path
    return None


def require_dnsmasq():
    """Fail the suite at once when dnsmasq is missing (harness style)."""
    if not dnsmasq_path():
        from harness import MissingProgram

        raise MissingProgram(
            "missing program: dnsmasq (Debian package: dnsmasq-base)")


def reverse_name(address):
    """'127.0.0.1' -> '1.0.0.127.in-addr.arpa' (also IPv6, nibble form)."""
    return ipaddress.ip_address(address).reverse_pointer


def _txt_arg(value):
    """One TXT record as dnsmasq wants it: "s1","s2" with \\ and \" escaped."""
    strings = [value] if isinstance(value, str) else list(value)
    quoted = []
    for s in strings:
        if "\n" in s or "\0" in s:
            raise ValueError("TXT strings with NUL or newline are not supported")
        quoted.append('"%s"' % s.replace("\\", "\\\\").replace('"', '\\"'))
    return ",".join(quoted)


def _query_packet(qid, name, qtype=1):
    out = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0" + struct.pack(">HH", qtype, 1)


def _free_udp_tcp_port():
    """A port free for both UDP and TCP on 127.0.0.1 a moment ago."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


class DnsServer:
    def __init__(self, records, zones=None, ttl=300, start=True):
        self.records = list(records)
        self.ttl = ttl
        self.zones = zones if zones is not None else self._default_zones()
        self.tmp = tempfile.mkdtemp(prefix="postern-dns-")
        self.log_path = os.path.join(self.tmp, "dnsmasq.log")
        self.proc = None
        self.port = None
        if start:
            self.start()

    @property
    def server(self):
        """The server as postern's dns.servers wants it."""
        return "127.0.0.1:%d" % self.port

    def _default_zones(self):
        zones = {"in-addr.arpa", "ip6.arpa"}
        for name, rtype, _ in self.records:
            if rtype.upper() != "PTR":
                zones.add(name.rstrip(".").split(".")[-1].lower())
        return sorted(zones)

    def _conf_lines(self):
        """The zone as dnsmasq configuration lines (its config-file parser
        honours quotes, so TXT strings may hold commas and quotes)."""
        args = []
        for zone in self.zones:
            args.append("local=/%s/" % zone.strip("."))
        for name, rtype, value in self.records:
            rtype = rtype.upper()
            name = name.rstrip(".")
            if rtype in ("A", "AAAA"):
                args.append("host-record=%s,%s" % (name, value))
            elif rtype == "TXT":
                args.append("txt-record=%s,%s" % (name, _txt_arg(value)))
            elif rtype == "MX":
                pref, host = value
                args.append("mx-host=%s,%s,%d" % (name, host.rstrip("."), pref))
            elif rtype == "PTR":
                try:
                    owner = reverse_name(name)
                except ValueError:
                    owner = name
                args.append("ptr-record=%s,%s" % (owner, value.rstrip(".")))
            elif rtype == "CNAME":
                args.append("cname=%s,%s" % (name, value.rstrip(".")))
            else:
                raise ValueError("record type %r is not supported" % rtype)
        return args

    def start(self):
        binary = dnsmasq_path()
        if not binary:
            require_dnsmasq()
        conf = os.path.join(self.tmp, "zone.conf")
        with open(conf, "w") as f:
            for line in self._conf_lines():
                if "\n" in line:
                    raise ValueError("newline in a record: %r" % line)
                f.write(line + "\n")
        last = ""
        for _ in range(5):
            self.port = _free_udp_tcp_port()
            cmd = [
                binary, "--no-daemon", "--port=%d" % self.port,
                "--listen-address=127.0.0.1", "--bind-interfaces",
                "--no-resolv", "--no-hosts", "--conf-file=" + conf,
                "--pid-file", "--log-queries", "--log-facility=-",
                "--local-ttl=%d" % self.ttl, "--cache-size=0",
            ]
            if os.geteuid() == 0:
                cmd.append("--user=%s" % _unprivileged_user())
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_ready():
                return self
            last = self.log_text()
            self.stop()
        raise RuntimeError("dnsmasq did not start:\n%s" % last)

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                s.sendto(_query_packet(0x4242, "ready.invalid"),
                         ("127.0.0.1", self.port))
                try:
                    data, _ = s.recvfrom(512)
                    if data[:2] == b"\x42\x42":
                        return True
                except socket.timeout:
                    pass
        return False

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def queries(self):
        """The queries received so far, as (type, name), in order."""
        out = []
        for m in re.finditer(r"query\[(\w+)\] (\S+) from", self.log_text()):
            if m.group(2) != "ready.invalid":
                out.append((m.group(1), m.group(2)))
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


def _unprivileged_user():
    import pwd

    for name in ("nobody", "daemon"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    return "root"


class SilentServer:
    """A DNS "server" that never answers: UDP and TCP bound, nobody reads."""

    def __init__(self):
        for _ in range(50):
            port = _free_udp_tcp_port()
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.udp.bind(("127.0.0.1", port))
                self.tcp.bind(("127.0.0.1", port))
                self.tcp.listen(1)  # connections wait in the backlog
            except OSError:
                self.close()
                continue
            self.port = port
            return
        raise RuntimeError("no free port for a silent DNS server")

    @property
    def server(self):
        return "127.0.0.1:%d" % self.port

    def close(self):
        for s in (getattr(self, "udp", None), getattr(self, "tcp", None)):
            if s:
                s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
