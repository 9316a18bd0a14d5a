"""Real Debian milters for the integration tests and the bench: OpenDKIM
(a signer and a verifier) and rspamd's milter, each a child process in
the foreground, in a temporary directory of its own, on a free port of
127.0.0.1; no system service, no syslog, no network.

    from real_milters import (DkimKey, OpenDkimSigner, OpenDkimVerifier,
                              Rspamd, require_real_milters)

    require_real_milters("opendkim", "opendkim-genkey", "rspamd")
    key = DkimKey("example.test", "sel1")          # opendkim-genkey
    with OpenDkimSigner(key) as signer:            # Mode s
        milter_config = {"socket": signer.socket}  # "inet:PORT@127.0.0.1"
    with DnsServer([key.dns_record()]) as dns, \\
         OpenDkimVerifier(dns.port) as verifier:   # Mode v, keys from dns
        ...
    with Rspamd(dns.port) as rspamd:               # rspamd_proxy, milter
        ...

How each one decides, so a test can reason about it:

- OpenDKIM signs a message when its client (the milter "connect"
  address: the SMTP client's) is in InternalHosts, 127.0.0.1 by default,
  and the domain of its From: header is the key's domain; otherwise, in
  Mode s, it passes the message unchanged.  It inserts DKIM-Signature as
  the first header (SMFIR_INSHEADER at 0), folded with bare LF.
- The verifier (Mode v) looks the key up in DNS: libunbound, pointed by
  an unbound configuration file at dns_server.py's dnsmasq (127.0.0.1,
  its port).  Two unbound defaults are turned off there, both needed for
  a test and neither for the verification itself: unbound refuses to
  query 127.0.0.1 (do-not-query-localhost) and answers every name under
  .test NXDOMAIN itself (RFC 6761's local zone).  No DNSSEC trust anchor
  is given, so the unsigned test zone is not "bogus".  It adds
  "Authentication-Results: verifier.test; dkim=pass ..." (or fail).
- rspamd runs Debian's whole rule set (/etc/rspamd/common.conf) with
  one worker, rspamd_proxy in milter mode scanning by itself (an upstream
  with self_scan), no redis, no controller, its DNS the test's dnsmasq.
  The GTUBE string gets "554 5.7.1 Gtube pattern" (SMFIR_REPLYCODE) at
  the end of the message; a plain message gets accept.  Its first start
  compiles hyperscan databases (tens of seconds on a slow machine); its
  start-up wait is long for that reason, and only bounds a hang.

The daemons run as the invoking user (root in CI: OpenDKIM has no UserID
line, rspamd gets --insecure); their files are in a directory of /tmp,
which is why OpenDKIM is told RequireSafeKeys no (it refuses a key under
a world-writable directory otherwise).

Run as a program, this module starts each daemon and talks the milter
protocol to it with the small client below, to show they work on this
machine without postern:  python3 tests/integration/real_milters.py
"""

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    DEBIAN_PACKAGES,
    MissingProgram,
    free_port,
    is_listening,
)

PROGRAMS = ("opendkim", "opendkim-genkey", "rspamd")

OPENDKIM_START_TIMEOUT = 30.0
# rspamd compiles its rules' hyperscan databases before it listens.
RSPAMD_START_TIMEOUT = 240.0
STOP_TIMEOUT = 20.0

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def program_path(name):
    for path in (shutil.which(name), "/usr/sbin/" + name, "/usr/bin/" + name):
        if path and os.access(path, os.X_OK):
            return path
    return None


def require_real_milters(*names):
    """Fail the suite at once, one line per missing program (harness
    style: no skip); they live in /usr/sbin, which a normal user's PATH
    may lack, so they are looked for there too."""
    missing = ["missing program: %s (Debian package: %s)"
               % (n, DEBIAN_PACKAGES[n]) for n in names if not program_path(n)]
    if missing:
        raise MissingProgram("\n".join(missing))


class Daemon:
    """A milter daemon in the foreground, in its own process group (rspamd
    forks workers), with its output in a file of its temp dir."""

    name = "daemon"
    start_timeout = OPENDKIM_START_TIMEOUT

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="postern-%s-" % self.name)
        self.port = free_port()
        self.out_path = os.path.join(self.tmp, "output.log")
        self.proc = None
        self._out = None

    @property
    def socket(self):
        """The address as the milter module's "socket" wants it."""
        return "inet:%d@127.0.0.1" % self.port

    def argv(self):
        raise NotImplementedError

    def start(self):
        self._out = open(self.out_path, "ab")
        self.proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=self._out,
            stderr=subprocess.STDOUT, cwd=self.tmp, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if is_listening(self.port):
                return self
            time.sleep(0.1)
        text = self.output()
        self.stop()
        raise AssertionError("%s did not listen on 127.0.0.1:%d within %.0f s"
                             ":\n%s" % (self.name, self.port,
                                        self.start_timeout, text[-4000:]))

    def output(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT)
        if self.proc:
            # Workers a main process left behind.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._out:
            self._out.close()
            self._out = None

    def cleanup(self):
        self.stop()
        if not os.environ.get("POSTERN_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()
        return False


# --- OpenDKIM ------------------------------------------------------------------


class DkimKey:
    """A fresh RSA key pair made by opendkim-genkey, in a temp dir."""

    def __init__(self, domain="example.test", selector="sel1", bits=1024):
        self.domain = domain
        self.selector = selector
        self.tmp = tempfile.mkdtemp(prefix="postern-dkimkey-")
        r = subprocess.run(
            [program_path("opendkim-genkey"), "-D", self.tmp, "-d", domain,
             "-s", selector, "-b", str(bits)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise AssertionError("opendkim-genkey failed: %s"
                                 % r.stdout.decode("utf-8", "replace"))
        self.private_path = os.path.join(self.tmp, selector + ".private")
        with open(os.path.join(self.tmp, selector + ".txt")) as f:
            # selector._domainkey IN TXT ( "v=DKIM1; ..." "p=..." ) ; comment
            self.txt = "".join(re.findall(r'"([^"]*)"', f.read()))
        if "p=" not in self.txt:
            raise AssertionError("no public key in opendkim-genkey's record: "
                                 "%r" % self.txt)

    @property
    def record_name(self):
        return "%s._domainkey.%s" % (self.selector, self.domain)

    def dns_record(self):
        """The public key as a dns_server.DnsServer record."""
        return (self.record_name, "TXT", self.txt)

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


class OpenDkim(Daemon):
    name = "opendkim"

    def config_lines(self):
        raise NotImplementedError

    def argv(self):
        conf = os.path.join(self.tmp, "opendkim.conf")
        lines = [
            "Socket inet:%d@127.0.0.1" % self.port,
            "Background no",
            "Syslog no",
            "PidFile %s" % os.path.join(self.tmp, "opendkim.pid"),
            "Canonicalization relaxed/simple",
        ] + self.config_lines()
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return [program_path("opendkim"), "-f", "-x", conf]


class OpenDkimSigner(OpenDkim):
    """OpenDKIM in Mode s: signs mail from key.domain sent by 127.0.0.1."""

    def __init__(self, key):
        self.key = key
        super().__init__()

    def config_lines(self):
        return [
            "Mode s",
            "Domain %s" % self.key.domain,
            "Selector %s" % self.key.selector,
            "KeyFile %s" % self.key.private_path,
            "RequireSafeKeys no",
        ]


class OpenDkimVerifier(OpenDkim):
    """OpenDKIM in Mode v, its keys from the DNS server on dns_port."""

    authserv_id = "verifier.test"

    def __init__(self, dns_port):
        self.dns_port = dns_port
        super().__init__()

    def config_lines(self):
        unbound = os.path.join(self.tmp, "unbound.conf")
        with open(unbound, "w") as f:
            f.write('server:\n'
                    '  do-not-query-localhost: no\n'
                    '  local-zone: "test." nodefault\n'
                    'forward-zone:\n'
                    '  name: "."\n'
                    '  forward-addr: 127.0.0.1@%d\n' % self.dns_port)
        return [
            "Mode v",
            "ResolverConfiguration %s" % unbound,
            "AuthservID %s" % self.authserv_id,
            "AlwaysAddARHeader yes",
        ]


# --- rspamd ---------------------------------------------------------------------


class Rspamd(Daemon):
    """rspamd's proxy worker in milter mode, scanning by itself."""

    name = "rspamd"
    start_timeout = RSPAMD_START_TIMEOUT

    def __init__(self, dns_port):
        self.dns_port = dns_port
        super().__init__()

    def argv(self):
        dirs = {}
        for d in ("db", "run", "log", "local"):
            dirs[d] = os.path.join(self.tmp, d)
            os.makedirs(dirs[d], exist_ok=True)
        conf = os.path.join(self.tmp, "rspamd.conf")
        with open(conf, "w") as f:
            f.write(RSPAMD_CONF % {"port": self.port,
                                   "dns_port": self.dns_port})
        argv = [program_path("rspamd"), "--no-fork", "--config", conf,
                "--var=DBDIR=" + dirs["db"], "--var=RUNDIR=" + dirs["run"],
                "--var=LOGDIR=" + dirs["log"],
                # Not /etc/rspamd/local.d: this machine's own settings
                # stay out of the test.
                "--var=LOCAL_CONFDIR=" + dirs["local"]]
        if os.geteuid() == 0:
            argv.append("--insecure")
        return argv

    def log_text(self):
        try:
            with open(os.path.join(self.tmp, "log", "rspamd.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def output(self):
        """Its output, then the end of its log (where it says why)."""
        return super().output() + self.log_text()[-4000:]

    def scans(self):
        """(action, message-id) of every message scanned, in order."""
        return re.findall(r"rspamd_task_write_log: id: <([^>]*)>.*?"
                          r"\(default: \w+ \(([^)]+)\)", self.log_text())


# Debian's rules and modules (common.conf), options of our own (the
# defaults of options.inc name /var/lib/rspamd and the machine's
# resolver), one worker.
RSPAMD_CONF = """\
.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    filters = "chartable,dkim,regexp,fuzzy_check";
    url_tld = "${SHAREDIR}/effective_tld_names.dat";
    cache_file = "$DBDIR/symbols.cache";
    hs_cache_dir = "$DBDIR";
    dynamic_conf = "$DBDIR/rspamd_dynamic";
    history_file = "$DBDIR/rspamd.history";
    control_socket = "$DBDIR/rspamd.sock mode=0600";
    explicit_modules = ["settings", "bayes_expiry"];
    allow_raw_input = true;
    dns {
        nameserver = ["127.0.0.1:%(dns_port)d"];
        timeout = 1s;
        retransmits = 1;
    }
}
logging {
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}
worker "rspamd_proxy" {
    bind_socket = "127.0.0.1:%(port)d";
    milter = yes;
    count = 1;
    timeout = 60s;
    upstream "local" {
        default = yes;
        self_scan = yes;
    }
}
"""

# Names rspamd's default rules look up (RBLs, maps.rspamd.com): the test
# DNS server answers them NXDOMAIN, at once, instead of REFUSED.
RSPAMD_DNS_ZONES = ["test", "com", "org", "net", "io", "in-addr.arpa",
                    "ip6.arpa"]


# --- a milter client, for the self-check below only -----------------------------

SMFIP_NR = {b"C": 0x1000, b"H": 0x2000, b"M": 0x4000, b"R": 0x8000,
            b"T": 0x10000, b"L": 0x80, b"N": 0x40000, b"B": 0x80000}
SMFIP_NO = {b"C": 0x1, b"H": 0x2, b"M": 0x4, b"R": 0x8, b"T": 0x200,
            b"L": 0x20, b"N": 0x40, b"B": 0x10}
MODIFICATIONS = b"hibm+-eqp"  # replies that are not the step's verdict


class MilterClient:
    """The MTA side of one milter session, blocking, for bring-up only."""

    def __init__(self, port, timeout=30.0):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, cmd, data=b""):
        self.sock.sendall(struct.pack(">I", len(data) + 1) + cmd + data)

    def read(self):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    packet, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return packet[:1], packet[1:]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the milter closed the connection")
            self.buf += chunk

    def replies(self):
        """Modification requests up to and with the verdict."""
        out = []
        for _ in range(1000):
            cmd, data = self.read()
            out.append((cmd, data))
            if cmd not in MODIFICATIONS:
                return out
        raise AssertionError("over 1000 modification requests")

    def negotiate(self):
        self.send(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
        cmd, data = self.read()
        if cmd != b"O":
            raise AssertionError("no option negotiation reply: %r" % cmd)
        _, self.actions, self.protocol = struct.unpack(">III", data[:12])

    def step(self, cmd, data=b""):
        if self.protocol & SMFIP_NO.get(cmd, 0):
            return []
        self.send(cmd, data)
        if self.protocol & SMFIP_NR.get(cmd, 0):
            return []
        return self.replies()

    def message(self, sender, rcpts, message):
        """A whole transaction from 127.0.0.1; the replies to the end of
        the message (modifications, then the verdict)."""
        self.negotiate()
        self.send(b"D", b"Cj\0mx.postern.test\0")
        self.step(b"C", b"client.test\0" + b"4" + struct.pack(">H", 25)
                  + b"127.0.0.1\0")
        self.step(b"H", b"client.test\0")
        self.step(b"M", b"<%s>\0" % sender.encode())
        for r in rcpts:
            self.step(b"R", b"<%s>\0" % r.encode())
        self.step(b"T")
        head, body = message.split(b"\r\n\r\n", 1)
        for field in re.split(rb"\r\n(?![ \t])", head):
            name, value = field.split(b":", 1)
            if not self.protocol & 0x100000 and value[:1] == b" ":
                value = value[1:]  # SMFIP_HDR_LEADSPC not asked for
            self.step(b"L", name + b"\0" + value + b"\0")
        self.step(b"N")
        self.step(b"B", body)
        self.send(b"E")
        result = self.replies()
        self.send(b"Q")
        return result


def _self_check():
    from dns_server import DnsServer

    require_real_milters(*PROGRAMS)
    msg = (b"From: Alice <alice@example.test>\r\nTo: bob@example.com\r\n"
           b"Subject: self-check\r\nMessage-ID: <1@example.test>\r\n\r\n"
           b"hello\r\n")
    key = DkimKey()
    try:
        with OpenDkimSigner(key) as signer:
            c = MilterClient(signer.port)
            replies = c.message("alice@example.test", ["bob@example.com"], msg)
            c.close()
        print("opendkim signer:", replies)
        cmd, data = replies[0]
        assert cmd == b"i", replies
        name, value = data[4:].split(b"\0")[:2]
        signed = name + b":" + value.replace(b"\n", b"\r\n") + b"\r\n" + msg
        with DnsServer([key.dns_record()], zones=RSPAMD_DNS_ZONES) as dns:
            with OpenDkimVerifier(dns.port) as verifier:
                c = MilterClient(verifier.port)
                replies = c.message("alice@example.test", ["bob@example.com"],
                                    signed)
                c.close()
            print("opendkim verifier:", replies)
            assert b"dkim=pass" in replies[0][1], replies
            t0 = time.monotonic()
            with Rspamd(dns.port) as rspamd:
                print("rspamd listening after %.1f s" % (time.monotonic() - t0))
                for body in (b"hello\r\n", GTUBE.encode() + b"\r\n"):
                    c = MilterClient(rspamd.port)
                    replies = c.message("alice@example.test",
                                        ["bob@example.com"],
                                        msg.replace(b"hello\r\n", body))
                    c.close()
                    print("rspamd:", replies)
                print(rspamd.scans())
    finally:
        key.cleanup()


if __name__ == "__main__":
    _self_check()
