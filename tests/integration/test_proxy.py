"""PROXY protocol listeners (docs/configuration.md, listen.proxy_protocol).

Debian's haproxy (mode tcp, send-proxy-v2, roundrobin, SMTP health
checks) sits in front of two postern instances; clients connect to it
from 127.0.0.2 while haproxy connects to postern from 127.0.0.3, the only
address in proxy_networks. Every message each instance stores, the log
and the hook API (store_file's envelope) must carry 127.0.0.2, and
relay_networks must judge 127.0.0.2, not the balancer.

Raw sockets from 127.0.0.3 then send v1 and v2 headers by hand: a header
and EHLO in one segment (the EHLO is the client's first command, and an
early talker under greet_pause), a header a byte at a time, LOCAL and
UNKNOWN (the connection's own address stands), garbage and silence (the
connection closes, nothing is said, the log says why). A client outside
proxy_networks is refused. The per-address connection limit counts the
real client behind the balancer. Implicit TLS works behind the header,
even with the ClientHello in the header's segment.
"""

import json
import os
import shutil
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    HOSTNAME,
    IO_TIMEOUT,
    RECEIVED_RX,
    TIMER_GUARD,
    TIMER_SLACK,
    Client,
    PosternTestCase,
    Server,
    free_port,
    is_listening,
    maildir_messages,
    main,
    read_bytes,
    read_envelope,
    require_programs,
    split_added_headers,
    store_plugin,
    wait_until,
)

CLIENT_IP = "127.0.0.2"  # the real client, behind the balancer
PROXY_IP = "127.0.0.3"  # the balancer, as postern sees it
OTHER_CLIENT_IP = "127.0.0.4"
HEADER_TIMEOUT = 1.0  # listen.proxy_timeout in these tests
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
BODY = b"Subject: proxied\r\n\r\nbehind the balancer\r\n"


def setUpModule():
    require_programs("haproxy", "certtool")


def proxied_server(plugins=None, config=None, tls=None):
    """A Server (not started) whose listener wants the PROXY header from
    PROXY_IP."""
    srv = Server(plugins=plugins, config=config, start=False)
    listener = srv.config["listen"][0]
    listener.update({"proxy_protocol": True,
                     "proxy_networks": [PROXY_IP + "/32"],
                     "proxy_timeout": HEADER_TIMEOUT})
    if tls:
        listener["tls"] = "implicit"
        srv.config["tls"] = {"certificates": [tls]}
    with open(srv.config_path, "w") as f:
        json.dump(srv.config, f, indent=2)
    return srv


def raw_client(port, source=PROXY_IP):
    """A harness Client whose socket comes from source."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(IO_TIMEOUT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    c = Client.__new__(Client)
    c.timeout = IO_TIMEOUT
    c.sock = sock
    c.buf = b""
    c.closed_by_peer = False
    c.greeting = None
    return c


def v1_header(src, sport, dst="127.0.0.1", dport=25):
    return ("PROXY TCP4 %s %s %d %d\r\n" % (src, dst, sport, dport)).encode()


def v2_header(src=None, sport=0, dst="127.0.0.1", dport=25, local=False):
    if local:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"
    body = (socket.inet_aton(src) + socket.inet_aton(dst)
            + struct.pack("!HH", sport, dport)
            + b"\x04\x00\x02xx")  # a NOOP TLV, to be skipped
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


def received_ip(data):
    headers = split_added_headers(data, BODY)
    m = RECEIVED_RX.match(headers[0])
    if not m:
        raise AssertionError("no Received header first: %r" % headers[:2])
    return m.group("ip")


class HAProxy:
    """haproxy in the foreground (-db) with a config in a temp dir: mode
    tcp, one frontend on a free loopback port, roundrobin over the given
    postern ports with send-proxy-v2 from PROXY_IP."""

    def __init__(self, backend_ports, check=True):
        self.tmp = tempfile.mkdtemp(prefix="postern-haproxy-")
        self.port = free_port()
        self.log_path = os.path.join(self.tmp, "haproxy.log")
        check_opts = " check inter 1s fall 3" if check else ""
        servers = "\n".join(
            "    server p%d 127.0.0.1:%d send-proxy-v2 source %s%s"
            % (i, p, PROXY_IP, check_opts)
            for i, p in enumerate(backend_ports))
        self.config_path = os.path.join(self.tmp, "haproxy.cfg")
        with open(self.config_path, "w") as f:
            f.write("""global
    maxconn 200

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout check 5s

frontend smtp
    bind 127.0.0.1:%d
    default_backend posterns

backend posterns
    balance roundrobin
%s
%s
""" % (self.port, "    option smtpchk EHLO haproxy.test" if check else "",
                servers))
        self.proc = None

    def __enter__(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", self.config_path],
            stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=self.tmp)
        up = wait_until(lambda: self.proc.poll() is not None
                        or is_listening(self.port), 10.0)
        if not up or self.proc.poll() is not None:
            self.__exit__(None, None, None)
            raise AssertionError("haproxy did not start:\n" + self.log_text())
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        if exc and exc[0] is not None:
            sys.stderr.write("\n--- haproxy log ---\n%s\n" % self.log_text())
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def client(self, source):
        return raw_client(self.port, source)


class BehindHAProxyTest(PosternTestCase):
    def test_two_instances_store_the_real_client(self):
        config = {"relay_networks": [CLIENT_IP + "/32"]}
        a = proxied_server(plugins={"20-store": store_plugin()}, config=config)
        b = proxied_server(plugins={"20-store": store_plugin()}, config=config)
        with a, b:
            a.start()
            b.start()
            with HAProxy([a.port, b.port]) as hap:
                # Health checks: haproxy's SMTP check behind a LOCAL header.
                for srv in (a, b):
                    self.assertIsNotNone(srv.wait_log(
                        r"proxy version=2 command=local proxy=127\.0\.0\.3 ",
                        timeout=10.0), srv.log_tail())
                for i in range(6):
                    with smtplib.SMTP("127.0.0.1", hap.port,
                                      local_hostname="client.test",
                                      timeout=IO_TIMEOUT,
                                      source_address=(CLIENT_IP, 0)) as smtp:
                        # elsewhere.test is not local: accepted only
                        # because the real client is in relay_networks.
                        refused = smtp.sendmail(
                            "s@example.org",
                            ["a@example.com", "b@elsewhere.test"], BODY)
                        self.assertEqual(refused, {})
            for srv in (a, b):
                msgs = srv.wait_messages(1)
                self.assertTrue(msgs, "an instance got no mail:\n"
                                + srv.log_tail())
            counts = []
            for srv in (a, b):
                msgs = maildir_messages(srv.maildir)
                counts.append(len(msgs))
                for path in msgs:
                    self.assertEqual(received_ip(read_bytes(path)), CLIENT_IP)
                    env = read_envelope(srv.maildir, path)
                    self.assertEqual(env["client_ip"], CLIENT_IP, env)
                self.assertGreaterEqual(srv.count_log(
                    r" connect client=127\.0\.0\.2 "), len(msgs))
                self.assertGreaterEqual(srv.count_log(
                    r"proxy version=2 command=proxy proxy=127\.0\.0\.3 "),
                    len(msgs))
                # The balancer's address is never taken for a client's.
                self.assertEqual(srv.count_log(
                    r"mail_from .*client=127\.0\.0\.3"), 0)
            self.assertEqual(sum(counts), 6, counts)
            self.assertEqual(counts, [3, 3])  # roundrobin

    def test_limit_counts_the_real_client(self):
        config = {"limits": {"connections_per_ip": 1, "exempt_networks": []}}
        srv = proxied_server(config=config)
        with srv:
            srv.start()
            with HAProxy([srv.port], check=False) as hap:
                first = hap.client(CLIENT_IP)
                first.expect(220)
                first.ehlo()
                # The same client again: over its limit of one.
                with hap.client(CLIENT_IP) as again:
                    r = again.reply()
                    self.assertEqual(r.code, 421, r)
                    self.assertIn("from your address", r.text)
                    self.assertTrue(again.wait_closed())
                self.assertIsNotNone(srv.wait_log(
                    r"connection_refused reason=per_ip_limit limit=connections_per_ip "
                    r"client=127\.0\.0\.2 "))
                # Another client behind the same balancer has its own count.
                with hap.client(OTHER_CLIENT_IP) as other:
                    other.expect(220)
                    other.cmd_expect("QUIT", 221)
                # The slot is given back under the real address.
                first.cmd_expect("QUIT", 221)
                first.close()
                self.assertTrue(wait_until(lambda: srv.count_log(
                    r"disconnect reason=quit") >= 2, 5.0))
                with hap.client(CLIENT_IP) as back:
                    back.expect(220)
                    back.cmd_expect("QUIT", 221)


class RawHeaderTest(PosternTestCase):
    def test_v1_header_and_ehlo_in_one_segment(self):
        # relay_networks holds the balancer: the real client must not
        # inherit it.
        config = {"relay_networks": [PROXY_IP + "/32"]}
        with proxied_server(plugins={"20-store": store_plugin()},
                            config=config) as srv:
            srv.start()
            with raw_client(srv.port) as c:
                c.send(v1_header("192.0.2.7", 40000)
                       + b"EHLO client.test\r\n")
                c.expect(220)
                c.expect(250)
                c.cmd_expect("MAIL FROM:<s@example.org>", 250)
                r = c.cmd("RCPT TO:<b@elsewhere.test>")
                self.assertEqual(r.code // 100, 5, r)
                c.cmd_expect("RCPT TO:<a@example.com>", 250)
                c.cmd_expect("DATA", 354)
                c.send(BODY + b".\r\n")
                c.expect(250)
                c.cmd_expect("QUIT", 221)
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            self.assertEqual(received_ip(read_bytes(msgs[0])), "192.0.2.7")
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["client_ip"], "192.0.2.7")
            self.assertIsNotNone(srv.wait_log(
                r"proxy version=1 command=proxy proxy=127\.0\.0\.3 "))
            self.assertIsNotNone(srv.wait_log(
                r" connect client=192\.0\.2\.7 port=40000 "))

    def test_early_talker_behind_the_header(self):
        # The bytes after the header are the client's first: sent before
        # the greeting, under greet_pause they make an early talker.
        with proxied_server(config={"limits": {"greet_pause": 0.5}}) as srv:
            srv.start()
            with raw_client(srv.port) as c:
                c.send(v2_header("192.0.2.8", 40001) + b"EHLO client.test\r\n")
                r = c.reply()
                self.assertEqual(r.code, 554, r)
                self.assertTrue(c.wait_closed())
            self.assertIsNotNone(srv.wait_log(
                r"early_talker client=192\.0\.2\.8"))

    def test_header_in_pieces(self):
        with proxied_server() as srv:
            srv.start()
            for header in (v1_header("192.0.2.9", 1), v2_header("192.0.2.10", 2)):
                with raw_client(srv.port) as c:
                    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for i in range(len(header)):
                        c.send(header[i:i + 1])
                        time.sleep(0.005)
                    c.expect(220)
                    c.ehlo()
                    c.cmd_expect("QUIT", 221)
            self.assertIsNotNone(srv.wait_log(r" connect client=192\.0\.2\.9 "))
            self.assertIsNotNone(srv.wait_log(r" connect client=192\.0\.2\.10 "))

    def test_ipv6_client(self):
        # An IPv6 client behind an IPv4 balancer: counted per /64, so a
        # second address of the same network meets the limit of one.
        config = {"limits": {"connections_per_ip": 1, "exempt_networks": []}}
        with proxied_server(config=config) as srv:
            srv.start()
            first = raw_client(srv.port)
            src = socket.inet_pton(socket.AF_INET6, "2001:db8:1::5")
            dst = socket.inet_pton(socket.AF_INET6, "2001:db8:ffff::25")
            body = src + dst + struct.pack("!HH", 40002, 25)
            first.send(V2_SIGNATURE + b"\x21\x21"
                       + struct.pack("!H", len(body)) + body)
            first.expect(220)
            with raw_client(srv.port) as again:
                again.send(b"PROXY TCP6 2001:db8:1::6 2001:db8:ffff::25 "
                           b"40003 25\r\n")
                r = again.reply()
                self.assertEqual(r.code, 421, r)
            first.cmd_expect("QUIT", 221)
            first.close()
            self.assertIsNotNone(srv.wait_log(
                r" connect client=2001:db8:1::5 port=40002 "))
            self.assertIsNotNone(srv.wait_log(
                r"connection_refused reason=per_ip_limit limit=connections_per_ip "
                r"client=2001:db8:1::6 port=40003"))

    def test_local_and_unknown_keep_the_connection_address(self):
        with proxied_server(plugins={"20-store": store_plugin()}) as srv:
            srv.start()
            for header, what in ((v2_header(local=True), "local"),
                                 (b"PROXY UNKNOWN\r\n", "unknown")):
                with raw_client(srv.port) as c:
                    c.send(header)
                    c.expect(220)
                    c.ehlo()
                    self.assertEqual(c.transaction(
                        "s@example.org", ["a@example.com"], BODY).code, 250)
                    c.cmd_expect("QUIT", 221)
                self.assertIsNotNone(srv.wait_log(r"command=%s " % what))
            msgs = srv.wait_messages(2)
            self.assertEqual(len(msgs), 2)
            for path in msgs:
                self.assertEqual(received_ip(read_bytes(path)), PROXY_IP)

    def test_untrusted_peer_is_refused(self):
        with proxied_server() as srv:
            srv.start()
            # 127.0.0.1 is not in proxy_networks: even a well-formed header
            # from it is never read.
            for send in (b"", v1_header("192.0.2.11", 1)):
                with raw_client(srv.port, source="127.0.0.1") as c:
                    c.send(send)
                    r = c.reply()
                    self.assertEqual(r.code, 421, r)
                    self.assertTrue(c.wait_closed())
            self.assertEqual(srv.count_log(
                r"connection_refused reason=untrusted_proxy "
                r"client=127\.0\.0\.1 "), 2)
            self.assertEqual(srv.count_log(r"192\.0\.2\.11"), 0)
            self.assertEqual(srv.count_log(r" connect client="), 0)

    def test_malformed_header_closes(self):
        with proxied_server() as srv:
            srv.start()
            bad = (b"EHLO client.test\r\n",
                   b"PROXY TCP4 192.0.2.1 127.0.0.1 1 99999\r\n",
                   V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,
                   b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n")
            for data in bad:
                with raw_client(srv.port) as c:
                    c.send(data)
                    self.assertTrue(c.wait_closed(), data)
                    self.assertEqual(c.buf, b"", data)  # nothing is said
            self.assertTrue(wait_until(lambda: srv.count_log(
                r"proxy_failed reason=invalid proxy=127\.0\.0\.3") == len(bad),
                5.0), srv.log_tail())
            self.assertEqual(srv.count_log(r" connect client="), 0)

    def test_missing_header_times_out(self):
        with proxied_server() as srv:
            srv.start()
            for data in (b"", b"PROXY TCP4 192.0.2.1"):
                with raw_client(srv.port) as c:
                    start = time.monotonic()
                    c.send(data)
                    self.assertTrue(c.wait_closed(TIMER_GUARD))
                    waited = time.monotonic() - start
                    self.assertEqual(c.buf, b"")
                    self.assertGreaterEqual(waited,
                                            HEADER_TIMEOUT - TIMER_SLACK)
            self.assertEqual(srv.count_log(
                r"proxy_failed reason=timeout proxy=127\.0\.0\.3"), 2)
            self.assertEqual(srv.count_log(r" connect client="), 0)


class ImplicitTlsTest(PosternTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="postern-proxy-tls-")
        cls.key = os.path.join(cls.tmp, "key.pem")
        cls.cert = os.path.join(cls.tmp, "cert.pem")
        template = os.path.join(cls.tmp, "template")
        with open(template, "w") as f:
            f.write('cn = "%s"\ndns_name = "%s"\nexpiration_days = 2\n'
                    "tls_www_server\nsigning_key\nencryption_key\n"
                    % (HOSTNAME, HOSTNAME))
        for args in (["--generate-privkey", "--key-type=ecdsa",
                      "--outfile", cls.key],
                     ["--generate-self-signed", "--load-privkey", cls.key,
                      "--template", template, "--outfile", cls.cert]):
            subprocess.run(["certtool", *args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True, timeout=30)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def handshake(self, sock, header):
        """TLS over memory BIOs, so the ClientHello can share the header's
        segment; returns (SSLObject, incoming BIO)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.cert)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(inc, out, server_hostname=HOSTNAME)
        first = True
        for _ in range(50):
            try:
                tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            data = out.read()
            if first:
                data = header + data  # header and ClientHello together
                first = False
            if data:
                sock.sendall(data)
            if done:
                return tls, inc
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("closed during the TLS handshake")
            inc.write(chunk)
        raise AssertionError("TLS handshake did not finish")

    def read_tls(self, sock, tls, inc):
        for _ in range(50):
            try:
                return tls.read(4096)
            except ssl.SSLWantReadError:
                chunk = sock.recv(65536)
                if not chunk:
                    return b""
                inc.write(chunk)
        raise AssertionError("no TLS data")

    def test_implicit_tls_behind_the_header(self):
        tls_cfg = {"cert": self.cert, "key": self.key}
        with proxied_server(tls=tls_cfg) as srv:
            srv.start()
            with raw_client(srv.port) as c:
                tls, inc = self.handshake(c.sock, v2_header("192.0.2.12", 3))
                greeting = self.read_tls(c.sock, tls, inc)
                self.assertTrue(greeting.startswith(b"220 "), greeting)
            self.assertIsNotNone(srv.wait_log(r" connect client=192\.0\.2\.12 "))
            self.assertIsNotNone(srv.wait_log(r" tls version="))


if __name__ == "__main__":
    main()
