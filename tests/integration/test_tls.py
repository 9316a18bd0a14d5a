"""TLS in postern, tested from the outside with real clients: Python's ssl
and smtplib, swaks and gnutls-cli.

Covers STARTTLS (RFC 3207) and implicit TLS (RFC 8314), tls_required,
certificate choice by SNI, session resumption with tickets (TLS 1.3 and
1.2; tls.session_tickets off; a ticket of another instance; across a
reload; gnutls-cli --resume), client certificates checked against tls.client_ca, STARTTLS command
injection (CVE-2011-0411), the state reset after STARTTLS, the Received
header of a message sent over TLS, close_notify on QUIT, the handshake
timeout and certificate reload on SIGHUP.

The certificates are made at run time with certtool in a temporary
directory: a CA, server certificates for mail.example.test and
other.example.test, and a client certificate, all signed by that CA.
"""

import json
import os
import re
import select
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    HOSTNAME,
    IO_TIMEOUT,
    START_TIMEOUT,
    TIMER_GUARD,
    TIMER_SLACK,
    Client,
    PosternTestCase,
    ServerError,
    Server,
    free_port,
    is_listening,
    main,
    parse_log_line,
    read_bytes,
    require_programs,
    require_swaks_tls,
    split_added_headers,
    store_plugin,
    swaks,
    wait_until,
)

MAIL_NAME = "mail.example.test"
OTHER_NAME = "other.example.test"
NEW_NAME = "new.example.test"
CLIENT_CN = "client.example.test"
CLIENT_ORG = "Postern Tests"
TOOL_TIMEOUT = 30.0

STORE = {"20-store": store_plugin()}


def setUpModule():
    require_programs("certtool", "gnutls-cli", "swaks")
    require_swaks_tls()


# --- certificates ------------------------------------------------------------


class PKI:
    """A throwaway CA and the certificates it signs, made with certtool."""

    def __init__(self):
        require_programs("certtool")
        self.dir = tempfile.mkdtemp(prefix="postern-pki-")
        self.ca_key = self._privkey("ca")
        self.ca = os.path.join(self.dir, "ca.pem")
        tmpl = self._template("ca", ['cn = "Postern Test CA"', "ca",
                                     "cert_signing_key"])
        self._certtool("--generate-self-signed", "--load-privkey", self.ca_key,
                       "--template", tmpl, "--outfile", self.ca)
        self.mail = self.server_cert(MAIL_NAME)
        self.other = self.server_cert(OTHER_NAME)
        self.client = self.issue("client", [
            'cn = "%s"' % CLIENT_CN, 'organization = "%s"' % CLIENT_ORG,
            "tls_www_client", "signing_key"])

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _certtool(self, *args):
        try:
            r = subprocess.run(["certtool", *args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=TOOL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError("certtool %s timed out" % " ".join(args))
        if r.returncode != 0:
            raise AssertionError("certtool %s failed: %s" % (
                " ".join(args), r.stderr.decode("utf-8", "replace")))

    def _privkey(self, name):
        path = os.path.join(self.dir, name + ".key")
        self._certtool("--generate-privkey", "--key-type=ecdsa", "--outfile",
                       path)
        return path

    def _template(self, name, lines):
        path = os.path.join(self.dir, name + ".tmpl")
        with open(path, "w") as f:
            f.write("\n".join(lines + ["expiration_days = 2"]) + "\n")
        return path

    def issue(self, name, template_lines, ca=None):
        """A certificate signed by the CA (or by ca=(cert, key)); returns
        (cert path, key path)."""
        key = self._privkey(name)
        cert = os.path.join(self.dir, name + ".pem")
        tmpl = self._template(name, template_lines)
        ca_cert, ca_key = ca or (self.ca, self.ca_key)
        self._certtool("--generate-certificate", "--load-privkey", key,
                       "--load-ca-certificate", ca_cert,
                       "--load-ca-privkey", ca_key,
                       "--template", tmpl, "--outfile", cert)
        return cert, key

    def server_cert(self, name, file_name=None):
        return self.issue(file_name or name, [
            'cn = "%s"' % name, 'dns_name = "%s"' % name, "tls_www_server",
            "signing_key"])

    def self_signed_client(self, name="rogue"):
        """A client certificate the CA never signed."""
        key = self._privkey(name)
        cert = os.path.join(self.dir, name + ".pem")
        tmpl = self._template(name, ['cn = "rogue.example.test"',
                                     "tls_www_client", "signing_key"])
        self._certtool("--generate-self-signed", "--load-privkey", key,
                       "--template", tmpl, "--outfile", cert)
        return cert, key


def client_context(pki, check_hostname=True, max_version=None, cert=None):
    """A client context trusting only the test CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if max_version is not None:
        ctx.maximum_version = max_version
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    return ctx


def peer_names(sslsock):
    """(subject CN, [DNS names]) of the server's certificate."""
    cert = sslsock.getpeercert()
    cn = None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
    dns = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
    return cn, dns


# --- the server ----------------------------------------------------------------


class TlsServer(Server):
    """A Server with TLS listeners and certificates.

    listeners: list of (tls mode, extra listener keys); the first one gets
    the harness's port (self.port), all of them are in self.ports.
    """

    def __init__(self, pki, listeners=(("starttls", {}),), certificates=None,
                 tls=None, plugins=None, config=None):
        super().__init__(plugins=plugins, config=config)
        self.ports = [self.port] + [free_port() for _ in listeners[1:]]
        self.config["listen"] = [
            dict({"address": "127.0.0.1", "port": port, "tls": mode}, **extra)
            for port, (mode, extra) in zip(self.ports, listeners)
        ]
        certs = certificates if certificates is not None else [pki.mail]
        self.config["tls"] = {
            "certificates": [{"cert": c, "key": k} for c, k in certs]
        }
        self.config["tls"].update(tls or {})
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)

    def start(self):
        super().start()
        # Every listener, not only the first, must be up.
        if not wait_until(lambda: all(is_listening(p) for p in self.ports),
                          START_TIMEOUT):
            self._kill()
            raise ServerError("postern did not listen on %s:\n%s"
                              % (self.ports, self.log_text()))
        return self

    def port_of(self, mode):
        for listener in self.config["listen"]:
            if listener["tls"] == mode:
                return listener["port"]
        raise KeyError(mode)

    def tls_log_lines(self):
        return [l for l in self.log_text().splitlines()
                if re.search(r" tls version=", l)]


def starttls(client, ctx, hostname=MAIL_NAME, **wrap):
    """STARTTLS on a harness Client; its socket becomes the TLS socket."""
    client.cmd_expect("STARTTLS", 220)
    if client.buf:
        raise AssertionError("bytes after the 220 to STARTTLS: %r" % client.buf)
    client.sock = ctx.wrap_socket(client.sock, server_hostname=hostname, **wrap)
    return client


def implicit_client(port, ctx, hostname=MAIL_NAME, greet=True, **wrap):
    """A harness Client speaking TLS from the first byte."""
    c = Client(port)
    try:
        c.sock = ctx.wrap_socket(c.sock, server_hostname=hostname, **wrap)
        if greet:
            c.greeting = c.expect(220)
    except BaseException:
        c.close()
        raise
    return c


def run_dialogue(argv, steps, timeout=TOOL_TIMEOUT):
    """Run an interactive client; steps is a list of (wait_for, send): when
    stdout holds wait_for (bytes, counted from the end of the previous
    match), send is written to its stdin. After the last step the output is
    read until the program exits. Returns (returncode, stdout, stderr)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = b"", b""
    pos = 0
    open_fds = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
    deadline = time.monotonic() + timeout
    step = 0
    try:
        while open_fds and time.monotonic() < deadline:
            while step < len(steps):
                idx = out.find(steps[step][0], pos)
                if idx < 0:
                    break
                pos = idx + len(steps[step][0])
                if steps[step][1] is not None:
                    proc.stdin.write(steps[step][1])
                    proc.stdin.flush()
                step += 1
            ready, _, _ = select.select(list(open_fds), [], [],
                                        max(0.0, deadline - time.monotonic()))
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    del open_fds[fd]
                elif open_fds[fd] == "out":
                    out += chunk
                else:
                    err += chunk
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            rc = proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            rc = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
    if step < len(steps):
        raise AssertionError(
            "%s: never saw %r (timeout %.0f s)\nstdout:\n%s\nstderr:\n%s" % (
                argv[0], steps[step][0], timeout,
                out.decode("utf-8", "replace"), err.decode("utf-8", "replace")))
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def log_events(srv):
    """(event, fields) for every log line, in order."""
    out = []
    for line in srv.log_text().splitlines():
        try:
            out.append(parse_log_line(line))
        except ValueError:
            pass
    return out


def reply_lines(text):
    """SMTP reply lines found in a tool's output."""
    return [l.rstrip("\r") for l in text.splitlines() if re.match(r"^\d{3}[ -]", l)]


def crlf(text):
    return text.replace("\n", "\r\n").encode("utf-8")


# --- the tests -----------------------------------------------------------------


class TlsTestCase(PosternTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = PKI()

    @classmethod
    def tearDownClass(cls):
        cls.pki.cleanup()
        super().tearDownClass()

    def ctx(self, **kw):
        return client_context(self.pki, **kw)

    def ehlo_keywords(self, reply):
        return [l.split(" ")[0].upper() for l in reply.lines[1:]]


class StartTlsTest(TlsTestCase):
    def test_starttls_advertised_and_reset(self):
        with TlsServer(self.pki) as srv, srv.client() as c:
            kw = self.ehlo_keywords(c.ehlo())
            self.assertIn("STARTTLS", kw)
            starttls(c, self.ctx())
            self.assertEqual(c.sock.version(), "TLSv1.3")
            cn, _ = peer_names(c.sock)
            self.assertEqual(cn, MAIL_NAME)
            # The plaintext EHLO is forgotten: MAIL needs a new EHLO.
            r = c.cmd("MAIL FROM:<alice@example.org>")
            self.assertEqual(r.code, 503, r)
            kw = self.ehlo_keywords(c.ehlo())
            self.assertNotIn("STARTTLS", kw)
            c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
            c.cmd_expect("QUIT", 221)
            m = srv.wait_log(r' tls version=TLS1\.3 .*sni="%s"' % re.escape(MAIL_NAME))
            self.assertIsNotNone(m, srv.log_tail())

    def test_starttls_inside_tls_is_503(self):
        with TlsServer(self.pki) as srv, srv.client() as c:
            c.ehlo()
            starttls(c, self.ctx())
            c.ehlo()
            r = c.cmd("STARTTLS")
            self.assertEqual(r.code, 503, r)
            # The session goes on inside the same TLS layer.
            c.cmd_expect("NOOP", 250)
            c.cmd_expect("QUIT", 221)

    def test_starttls_with_argument_is_501(self):
        with TlsServer(self.pki) as srv, srv.client() as c:
            c.ehlo()
            r = c.cmd("STARTTLS now")
            self.assertEqual(r.code, 501, r)
            c.cmd_expect("NOOP", 250)

    def test_starttls_not_offered_on_plain_listener(self):
        with TlsServer(self.pki, listeners=[("none", {}), ("starttls", {})]) as srv:
            with srv.client() as c:
                kw = self.ehlo_keywords(c.ehlo())
                self.assertNotIn("STARTTLS", kw)
                r = c.cmd("STARTTLS")
                self.assertEqual(r.code, 502, r)
                c.cmd_expect("NOOP", 250)

    def assertInjectionDiscarded(self, injected):
        with TlsServer(self.pki) as srv, srv.client() as c:
            c.ehlo()
            c.send(b"STARTTLS\r\n" + injected)
            c.expect(220)
            self.assertEqual(c.buf, b"", "plaintext after the 220 to STARTTLS")
            c.sock = self.ctx().wrap_socket(c.sock, server_hostname=MAIL_NAME)
            # The first reply inside TLS must answer our EHLO, not the
            # command smuggled in the plaintext packet.
            r = c.cmd("EHLO client.test")
            self.assertEqual(r.code, 250, r)
            self.assertEqual(r.lines[0], HOSTNAME,
                             "first reply after the handshake is not the "
                             "EHLO reply: %r" % r)
            self.assertGreater(len(r.lines), 1, r)
            c.cmd_expect("QUIT", 221)
            self.assertTrue(c.wait_closed(), "no close after QUIT")
            self.assertEqual(c.buf, b"", "extra replies: %r" % c.buf)
            wait_until(lambda: srv.count_log(r" disconnect ") >= 1, 5)
            for verb in re.findall(rb"^[A-Z]+", injected, re.M):
                self.assertEqual(
                    srv.count_log(r' command line="%s' % verb.decode()), 0,
                    "the injected %s was executed:\n%s" % (verb, srv.log_tail()))

    def test_starttls_injection_rset_discarded(self):
        self.assertInjectionDiscarded(b"RSET\r\n")

    def test_starttls_injection_mail_discarded(self):
        self.assertInjectionDiscarded(
            b"MAIL FROM:<x@y.example>\r\nRCPT TO:<bob@example.com>\r\n")

    def test_tls_required_refuses_mail_before_starttls(self):
        listeners = [("starttls", {"tls_required": True})]
        with TlsServer(self.pki, listeners=listeners, plugins=STORE) as srv:
            with srv.client() as c:
                kw = self.ehlo_keywords(c.ehlo())
                self.assertIn("STARTTLS", kw)
                r = c.cmd("MAIL FROM:<alice@example.org>")
                self.assertEqual((r.code, r.enhanced), (530, "5.7.0"), r)
                # Still in plaintext, still not allowed.
                r = c.cmd("RCPT TO:<bob@example.com>")
                self.assertEqual(r.code, 503, r)
                starttls(c, self.ctx())
                c.ehlo()
                r = c.transaction("alice@example.org", ["bob@example.com"],
                                  b"Subject: required\r\n\r\nover TLS\r\n")
                self.assertEqual(r.code, 250, r)
                c.cmd_expect("QUIT", 221)
            self.assertEqual(len(srv.wait_messages(1)), 1)

    def test_received_header_tls13(self):
        self.assertReceivedOverTls(None, "TLS1.3")

    def test_received_header_tls12(self):
        self.assertReceivedOverTls(ssl.TLSVersion.TLSv1_2, "TLS1.2")

    def assertReceivedOverTls(self, max_version, version):
        body = crlf("From: a@example.org\nSubject: tls %s\n\nsecret body\n"
                    % version)
        with TlsServer(self.pki, plugins=STORE) as srv:
            ctx = self.ctx(check_hostname=False, max_version=max_version)
            with srv.smtplib() as s:
                s.ehlo("client.test")
                code, _ = s.starttls(context=ctx)
                self.assertEqual(code, 220)
                self.assertEqual(s.sock.version(),
                                 version.replace("TLS", "TLSv"))
                s.ehlo("client.test")
                self.assertFalse(s.has_extn("starttls"))
                refused = s.sendmail("alice@example.org", ["bob@example.com"],
                                     body)
                self.assertEqual(refused, {})
                s.quit()
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            headers = split_added_headers(read_bytes(msgs[0]), body)
            received = headers[0]
            self.assertTrue(received.startswith("Received: from client.test "),
                            received)
            self.assertRegex(received, r"\(using %s with cipher [A-Z0-9_-]+\)"
                             % re.escape(version))
            self.assertRegex(received, r" by %s \(postern\) with ESMTPS id "
                             % re.escape(HOSTNAME))

    def test_quit_over_tls_sends_close_notify(self):
        with TlsServer(self.pki) as srv, srv.client() as c:
            c.ehlo()
            starttls(c, self.ctx(), suppress_ragged_eofs=False)
            c.ehlo()
            c.cmd_expect("QUIT", 221)
            try:
                closed = c.wait_closed()
            except ssl.SSLError as e:
                self.fail("TLS closed without close_notify after QUIT: %r" % e)
            self.assertTrue(closed, "server did not close after QUIT")

    def test_failed_handshake_has_no_plaintext_fallback(self):
        with TlsServer(self.pki) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("STARTTLS", 220)
            # Not a TLS ClientHello: the handshake fails, and the commands
            # must not be run in the clear instead.
            c.send(b"EHLO client.test\r\nMAIL FROM:<a@b.example>\r\n")
            self.assertTrue(c.wait_closed(5.0), "session kept after a failed "
                            "handshake")
            self.assertNotIn(b"250", c.buf)
            self.assertIsNotNone(srv.wait_log(r" tls_failed "), srv.log_tail())
            self.assertEqual(srv.count_log(r' command line="MAIL'), 0)
            self.assertTrue(srv.alive)

    def test_handshake_timeout(self):
        tls = {"handshake_timeout": 1}
        with TlsServer(self.pki, tls=tls) as srv, srv.client() as c:
            c.ehlo()
            # The timer starts when the server reads STARTTLS, after this.
            start = time.monotonic()
            c.cmd_expect("STARTTLS", 220)
            # Say nothing: the server gives up, and not before 1 s.
            self.assertTrue(c.wait_closed(TIMER_GUARD),
                            "handshake never timed out")
            self.assertGreaterEqual(time.monotonic() - start,
                                    1.0 - TIMER_SLACK)
            self.assertTrue(srv.alive)


class ImplicitTlsTest(TlsTestCase):
    LISTENERS = [("implicit", {})]

    def test_greeting_after_handshake(self):
        with TlsServer(self.pki, listeners=self.LISTENERS) as srv:
            c = implicit_client(srv.port, self.ctx(), greet=False)
            with c:
                r = c.expect(220)
                self.assertTrue(r.lines[0].startswith(HOSTNAME), r)
                kw = self.ehlo_keywords(c.ehlo())
                self.assertNotIn("STARTTLS", kw)
                r = c.cmd("STARTTLS")
                self.assertEqual(r.code, 503, r)
                c.cmd_expect("QUIT", 221)

    def test_plaintext_client_gets_no_greeting(self):
        with TlsServer(self.pki, listeners=self.LISTENERS) as srv:
            with Client(srv.port, timeout=1.0) as c:
                try:
                    c._fill(time.monotonic() + 1.0)
                except socket.timeout:
                    pass
                self.assertFalse(c.buf.startswith(b"220"),
                                 "plaintext greeting on an implicit TLS port")
                c.send(b"EHLO client.test\r\n")
                self.assertTrue(c.wait_closed(5.0),
                                "plaintext EHLO on a TLS port kept open")
                self.assertNotIn(b"250", c.buf)
            self.assertTrue(srv.alive)

    def test_smtplib_ssl_transaction(self):
        body = crlf("Subject: implicit\n\nhello over 465\n")
        with TlsServer(self.pki, listeners=self.LISTENERS, plugins=STORE) as srv:
            ctx = self.ctx(check_hostname=False)
            with smtplib.SMTP_SSL("127.0.0.1", srv.port, local_hostname="client.test",
                                  context=ctx, timeout=IO_TIMEOUT) as s:
                refused = s.sendmail("alice@example.org", ["bob@example.com"], body)
                self.assertEqual(refused, {})
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            headers = split_added_headers(read_bytes(msgs[0]), body)
            self.assertRegex(headers[0], r"\(using TLS1\.[23] with cipher ")
            self.assertRegex(headers[0], r" with ESMTPS id ")


class SniTest(TlsTestCase):
    def server(self):
        return TlsServer(self.pki, listeners=[("implicit", {}), ("starttls", {})],
                         certificates=[self.pki.mail, self.pki.other])

    def test_sni_picks_certificate_implicit(self):
        with self.server() as srv:
            for name in (OTHER_NAME, MAIL_NAME, OTHER_NAME):
                with implicit_client(srv.port, self.ctx(), hostname=name) as c:
                    cn, dns = peer_names(c.sock)
                    self.assertEqual(cn, name)
                    self.assertIn(name, dns)
                    c.cmd_expect("QUIT", 221)
            self.assertIsNotNone(
                srv.wait_log(r' tls .*sni="%s" ' % re.escape(OTHER_NAME)))

    def test_sni_picks_certificate_starttls(self):
        with self.server() as srv:
            with Client(srv.port_of("starttls")) as c:
                c.expect(220)
                c.ehlo()
                starttls(c, self.ctx(), hostname=OTHER_NAME)
                cn, dns = peer_names(c.sock)
                self.assertEqual(cn, OTHER_NAME)
                self.assertEqual(dns, [OTHER_NAME])
                c.ehlo()

    def test_no_or_unknown_sni_gets_first_certificate(self):
        with self.server() as srv:
            ctx = self.ctx(check_hostname=False)
            for name in (None, "unknown.example.test"):
                with implicit_client(srv.port, ctx, hostname=name) as c:
                    cn, _ = peer_names(c.sock)
                    self.assertEqual(cn, MAIL_NAME, "SNI %r" % name)


class ResumptionTest(TlsTestCase):
    """Session tickets: on by default, for TLS 1.3 and TLS 1.2 (RFC 5077),
    over implicit TLS and STARTTLS; off with tls.session_tickets false; a
    ticket only resumes on the instance whose key made it (all workers of
    one daemon share it), and the key survives a reload."""

    TLS12 = ssl.TLSVersion.TLSv1_2

    def connect(self, srv, ctx, implicit, session):
        if implicit:
            c = implicit_client(srv.port_of("implicit"), ctx, session=session)
        else:
            c = Client(srv.port_of("starttls"))
            try:
                c.expect(220)
                c.ehlo()
                starttls(c, ctx, session=session)
            except BaseException:
                c.close()
                raise
        # Read a reply: TLS 1.3 tickets arrive after the handshake.
        c.ehlo()
        return c

    def first_session(self, srv, ctx, implicit):
        """A full handshake; returns the session (with its ticket)."""
        with self.connect(srv, ctx, implicit, None) as first:
            self.assertFalse(first.sock.session_reused)
            session = first.sock.session
            self.assertIsNotNone(session)
            first.cmd_expect("QUIT", 221)
            first.wait_closed()
        return session

    def resumed(self, srv, ctx, implicit, session, subject=None):
        """Connect again with session; True when it was resumed. With
        subject, send one message over that connection."""
        with self.connect(srv, ctx, implicit, session) as again:
            reused = again.sock.session_reused
            if subject is not None:
                r = again.transaction("alice@example.org", ["bob@example.com"],
                                      b"Subject: %s\r\n\r\nx\r\n" % subject)
                self.assertEqual(r.code, 250, r)
            else:
                again.cmd_expect("NOOP", 250)
            again.cmd_expect("QUIT", 221)
        return reused

    def resume(self, srv, max_version, implicit):
        ctx = self.ctx(max_version=max_version)
        session = self.first_session(srv, ctx, implicit)
        resumed = []
        for n in range(2):
            with self.connect(srv, ctx, implicit, session) as again:
                resumed.append(again.sock.session_reused)
                again.cmd_expect("NOOP", 250)
                session = again.sock.session
                again.cmd_expect("QUIT", 221)
        self.assertEqual(resumed, [True, True],
                         "sessions not resumed; tls log lines:\n%s"
                         % "\n".join(srv.tls_log_lines()))
        self.assertIsNotNone(srv.wait_log(r" tls version=.* resumed=yes "))

    def server(self, tls=None, plugins=None):
        return TlsServer(self.pki, listeners=[("implicit", {}), ("starttls", {})],
                         tls=tls, plugins=plugins)

    def test_resumption_tls13_implicit(self):
        with self.server() as srv:
            self.resume(srv, None, True)

    def test_resumption_tls13_starttls(self):
        with self.server() as srv:
            self.resume(srv, None, False)

    def test_resumption_tls12_ticket(self):
        with self.server() as srv:
            self.resume(srv, self.TLS12, True)

    def test_resumption_tls12_ticket_starttls(self):
        with self.server() as srv:
            self.resume(srv, self.TLS12, False)

    def test_message_over_resumed_session(self):
        with self.server(plugins=STORE) as srv:
            for version in (None, self.TLS12):
                for implicit in (True, False):
                    ctx = self.ctx(max_version=version)
                    session = self.first_session(srv, ctx, implicit)
                    subject = b"resumed %s %s" % (
                        b"tls12" if version else b"tls13",
                        b"implicit" if implicit else b"starttls")
                    self.assertTrue(self.resumed(srv, ctx, implicit, session,
                                                 subject), subject)
            msgs = [read_bytes(m) for m in srv.wait_messages(4)]
            self.assertEqual(len(msgs), 4)
            for m in msgs:
                self.assertIn(b" with ESMTPS id ", m)
            self.assertEqual(srv.count_log(r" tls version=.* resumed=yes "), 4)

    def test_session_tickets_false_no_resumption(self):
        with self.server(tls={"session_tickets": False},
                         plugins=STORE) as srv:
            for version in (None, self.TLS12):
                for implicit in (True, False):
                    ctx = self.ctx(max_version=version)
                    session = self.first_session(srv, ctx, implicit)
                    # A full handshake each time, and mail still flows.
                    self.assertFalse(self.resumed(srv, ctx, implicit, session,
                                                  b"no tickets"),
                                     (version, implicit))
            self.assertEqual(len(srv.wait_messages(4)), 4)
            self.assertEqual(srv.count_log(r" tls version=.* resumed=yes "), 0)
            self.assertEqual(srv.count_log(r" tls version=.* resumed=no "), 8)

    def test_session_lifetime_accepted(self):
        with self.server(tls={"session_lifetime": 600}) as srv:
            self.resume(srv, None, True)

    def test_ticket_of_another_instance_not_accepted(self):
        with self.server() as a, self.server(plugins=STORE) as b:
            for version in (None, self.TLS12):
                ctx = self.ctx(max_version=version)
                session = self.first_session(a, ctx, True)
                # b has its own ticket key: a full handshake, mail flows.
                self.assertFalse(self.resumed(b, ctx, True, session, b"other"),
                                 version)
                # The same ticket still resumes on a: the test can fail.
                self.assertTrue(self.resumed(a, ctx, True, session), version)
            self.assertEqual(len(b.wait_messages(2)), 2)
            self.assertEqual(b.count_log(r" tls version=.* resumed=yes "), 0)

    def test_ticket_resumes_on_another_worker(self):
        """The key is made before the workers are forked: a ticket from a
        worker that died resumes on the worker restarted in its place (and
        on any other)."""
        with TlsServer(self.pki, listeners=[("implicit", {})],
                       config={"workers": 2}) as srv:
            srv.worker_deaths_expected = True
            self.assertIsNotNone(srv.wait_log(r"supervisor_ready", IO_TIMEOUT))
            for version in (None, self.TLS12):
                ctx = self.ctx(max_version=version)
                session = self.first_session(srv, ctx, True)
                issuer = [f for e, f in log_events(srv) if e == "tls"][-1]
                pid = [int(f["pid"]) for e, f in log_events(srv)
                       if e == "worker_started"
                       and f["worker"] == issuer["worker"]][-1]
                os.kill(pid, signal.SIGKILL)
                self.assertIsNotNone(srv.wait_log(
                    r"worker_died pid=%d " % pid, IO_TIMEOUT), srv.log_tail())
                self.assertTrue(wait_until(lambda: [
                    e for e, f in log_events(srv) if e == "worker_started"
                    and int(f["pid"]) != pid
                    and f["worker"] == issuer["worker"]], IO_TIMEOUT),
                    srv.log_tail())
                self.assertTrue(self.resumed(srv, ctx, True, session), version)

    def test_ticket_key_survives_reload(self):
        with self.server() as srv:
            for version in (None, self.TLS12):
                ctx = self.ctx(max_version=version)
                session = self.first_session(srv, ctx, True)
                n = srv.count_log(r" reloaded ")
                srv.proc.send_signal(signal.SIGHUP)
                self.assertTrue(
                    wait_until(lambda: srv.count_log(r" reloaded ") > n, 5),
                    srv.log_tail())
                self.assertTrue(self.resumed(srv, ctx, True, session), version)


class ClientCertificateTest(TlsTestCase):
    def server(self):
        return TlsServer(self.pki, listeners=[("implicit", {})],
                         tls={"client_ca": self.pki.ca})

    def test_verified_client_dn_logged(self):
        with self.server() as srv:
            ctx = self.ctx(cert=self.pki.client)
            with implicit_client(srv.port, ctx) as c:
                c.ehlo()
                c.cmd_expect("QUIT", 221)
            m = srv.wait_log(r' tls .* peer=(-|"[^"]*")')
            self.assertIsNotNone(m, srv.log_tail())
            dn = m.group(1)[1:-1]
            self.assertIn("CN=%s" % CLIENT_CN, dn)
            self.assertIn("O=%s" % CLIENT_ORG, dn)

    def test_no_client_certificate_still_served(self):
        with self.server() as srv:
            with implicit_client(srv.port, self.ctx()) as c:
                c.ehlo()
                c.cmd_expect("QUIT", 221)
            m = srv.wait_log(r' tls .* peer=(-|"[^"]*")')
            self.assertIsNotNone(m, srv.log_tail())
            self.assertEqual(m.group(1), "-")

    def test_untrusted_client_certificate_not_reported(self):
        rogue = self.pki.self_signed_client()
        with self.server() as srv:
            try:
                c = implicit_client(srv.port, self.ctx(cert=rogue))
            except (ssl.SSLError, ConnectionError, AssertionError):
                c = None  # refusing the handshake is fine too
            if c is not None:
                with c:
                    c.ehlo()
                    c.cmd_expect("QUIT", 221)
                m = srv.wait_log(r' tls .* peer=(-|"[^"]*")')
                self.assertIsNotNone(m, srv.log_tail())
                self.assertEqual(m.group(1), "-",
                                 "an unverified certificate was reported")
            self.assertNotIn("rogue.example.test", srv.log_text())
            self.assertTrue(srv.alive)

    def test_client_certificate_without_client_ca_ignored(self):
        with TlsServer(self.pki, listeners=[("implicit", {})]) as srv:
            with implicit_client(srv.port, self.ctx(cert=self.pki.client)) as c:
                c.ehlo()
                c.cmd_expect("QUIT", 221)
            m = srv.wait_log(r' tls .* peer=(-|"[^"]*")')
            self.assertIsNotNone(m, srv.log_tail())
            self.assertEqual(m.group(1), "-")


class ReloadTest(TlsTestCase):
    def test_sighup_reloads_certificates(self):
        live_dir = tempfile.mkdtemp(prefix="postern-live-", dir=self.pki.dir)
        cert = os.path.join(live_dir, "cert.pem")
        key = os.path.join(live_dir, "key.pem")
        shutil.copy(self.pki.mail[0], cert)
        shutil.copy(self.pki.mail[1], key)
        new_cert, new_key = self.pki.server_cert(NEW_NAME)
        with TlsServer(self.pki, listeners=[("implicit", {}), ("starttls", {})],
                       certificates=[(cert, key)], plugins=STORE) as srv:
            old = implicit_client(srv.port, self.ctx())
            old_st = Client(srv.port_of("starttls"))
            with old, old_st:
                old.ehlo()
                old_st.expect(220)
                old_st.ehlo()
                starttls(old_st, self.ctx())
                old_st.ehlo()
                # Swap the files (rename: never a half-written file).
                for src, dst in ((new_cert, cert), (new_key, key)):
                    tmp = dst + ".tmp"
                    shutil.copy(src, tmp)
                    os.replace(tmp, dst)
                srv.proc.send_signal(signal.SIGHUP)
                self.assertIsNotNone(srv.wait_log(r" reloaded "), srv.log_tail())
                with implicit_client(srv.port, self.ctx(), hostname=NEW_NAME) as c:
                    cn, _ = peer_names(c.sock)
                    self.assertEqual(cn, NEW_NAME)
                    c.cmd_expect("QUIT", 221)
                # Sessions that started before the reload carry on.
                for sess in (old, old_st):
                    self.assertEqual(peer_names(sess.sock)[0], MAIL_NAME)
                    r = sess.transaction("alice@example.org", ["bob@example.com"],
                                         b"Subject: before reload\r\n\r\nx\r\n")
                    self.assertEqual(r.code, 250, r)
                    sess.cmd_expect("QUIT", 221)
            self.assertEqual(len(srv.wait_messages(2)), 2)

    def test_failed_reload_keeps_certificates(self):
        live_dir = tempfile.mkdtemp(prefix="postern-live-", dir=self.pki.dir)
        cert = os.path.join(live_dir, "cert.pem")
        key = os.path.join(live_dir, "key.pem")
        shutil.copy(self.pki.mail[0], cert)
        shutil.copy(self.pki.mail[1], key)
        with TlsServer(self.pki, listeners=[("implicit", {})],
                       certificates=[(cert, key)]) as srv:
            # A greeting first: the loop (and its SIGHUP handler) runs, even
            # under a slow POSTERN_WRAPPER such as valgrind.
            with implicit_client(srv.port, self.ctx()) as c:
                c.cmd_expect("QUIT", 221)
            # A renewed certificate without its new key, then no file at
            # all. (Not a malformed PEM file: GnuTLS 3.7.9 itself leaks
            # 168 bytes on that path, which would trip LeakSanitizer.)
            shutil.copy(self.pki.other[0], cert)
            for n, broken in enumerate(("mismatch", "missing"), 1):
                if broken == "missing":
                    os.unlink(cert)
                srv.proc.send_signal(signal.SIGHUP)
                self.assertTrue(
                    wait_until(lambda: srv.count_log(r" reload_failed ") >= n, 5),
                    "no reload_failed after SIGHUP with a %s certificate:\n%s"
                    % (broken, srv.log_tail()))
                self.assertTrue(srv.alive)
                with implicit_client(srv.port, self.ctx()) as c:
                    self.assertEqual(peer_names(c.sock)[0], MAIL_NAME)
                    c.ehlo()
                    c.cmd_expect("QUIT", 221)


class ToolsTest(TlsTestCase):
    def gnutls_cli(self, port, extra, steps):
        argv = ["gnutls-cli", "--port", str(port), "--x509cafile", self.pki.ca,
                "--verify-hostname", MAIL_NAME, "--sni-hostname", MAIL_NAME,
                "--crlf"] + extra + ["127.0.0.1"]
        return run_dialogue(argv, steps)

    def test_gnutls_cli_implicit(self):
        with TlsServer(self.pki, listeners=[("implicit", {})]) as srv:
            rc, out, err = self.gnutls_cli(srv.port, [], [
                (b"\n220 ", b"EHLO gnutls.test\n"),
                (b"\n250 ", b"QUIT\n"),
                (b"\n221 ", None),
            ])
            self.assertIn("The certificate is trusted", out + err)
            # 0 only after a clean close (close_notify) following QUIT.
            self.assertEqual(rc, 0, "gnutls-cli exit status\n%s" % err)
            lines = reply_lines(out)
            self.assertTrue(lines[0].startswith("220 " + HOSTNAME), lines)
            self.assertEqual(lines[1], "250-" + HOSTNAME)
            self.assertTrue(lines[-1].startswith("221 "), lines)
            self.assertNotIn("250-STARTTLS", lines)
            self.assertIsNotNone(srv.wait_log(r' command line="EHLO gnutls.test"'))

    def test_gnutls_cli_starttls(self):
        with TlsServer(self.pki) as srv:
            rc, out, err = self.gnutls_cli(srv.port, ["--starttls-proto", "smtp"], [
                (b"Simple Client Mode", b"EHLO gnutls.test\n"),
                (b"\n250 ", b"QUIT\n"),
                (b"\n221 ", None),
            ])
            self.assertIn("The certificate is trusted", out + err)
            # 0 only after a clean close (close_notify) following QUIT.
            self.assertEqual(rc, 0, "gnutls-cli exit status\n%s" % err)
            lines = reply_lines(out)
            self.assertIn("250-" + HOSTNAME, lines)
            self.assertNotIn("250-STARTTLS", lines)
            self.assertTrue(lines[-1].startswith("221 "), lines)
            self.assertIsNotNone(srv.wait_log(r' command line="STARTTLS"'))
            self.assertIsNotNone(srv.wait_log(r' command line="EHLO gnutls.test"'))
            self.assertIsNotNone(srv.wait_log(r" tls version=TLS1\.[23] "))

    def test_gnutls_cli_resume(self):
        with TlsServer(self.pki, listeners=[("implicit", {})]) as srv:
            for version in ("TLS1.3", "TLS1.2"):
                # --resume: a full handshake, then a second connection that
                # resumes with the ticket the first one received.
                prio = "NORMAL:-VERS-ALL:+VERS-" + version
                rc, out, err = self.gnutls_cli(
                    srv.port, ["--resume", "--priority", prio], [
                        (b"\n220 ", b"QUIT\n"),
                        (b"\n221 ", None),
                    ])
                self.assertEqual(rc, 0, "gnutls-cli exit status\n%s" % err)
                self.assertIn("This is a resumed session", out + err, version)
            self.assertEqual(srv.count_log(r" tls version=.* resumed=yes "), 2)

    def swaks(self, port, *extra):
        return swaks("--server", "127.0.0.1", "--port", str(port),
                     "--from", "alice@example.org", "--to", "bob@example.com",
                     "--helo", "client.test", "--timeout", "20",
                     "--header", "Subject: swaks tls", *extra,
                     timeout=TOOL_TIMEOUT)

    def test_swaks_starttls(self):
        with TlsServer(self.pki, listeners=[("starttls", {"tls_required": True})],
                       plugins=STORE) as srv:
            rc, out = self.swaks(srv.port, "--tls")
            self.assertEqual(rc, 0, out)
            self.assertIn("TLS started", out)
            self.assertRegex(out, r"<~  250 2\.0\.0 Ok: queued as ")
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            self.assertIn(b" with ESMTPS id ", read_bytes(msgs[0]))

    def test_swaks_tls_on_connect(self):
        with TlsServer(self.pki, listeners=[("implicit", {})], plugins=STORE) as srv:
            rc, out = self.swaks(srv.port, "--tls-on-connect")
            self.assertEqual(rc, 0, out)
            self.assertRegex(out, r"<~  250 2\.0\.0 Ok: queued as ")
            self.assertEqual(len(srv.wait_messages(1)), 1)

    def test_swaks_tls_required_without_tls_fails(self):
        with TlsServer(self.pki, listeners=[("starttls", {"tls_required": True})],
                       plugins=STORE) as srv:
            rc, out = self.swaks(srv.port)
            self.assertNotEqual(rc, 0, out)
            self.assertIn("530 5.7.0", out)
            self.assertEqual(srv.messages(), [])


if __name__ == "__main__":
    main()
