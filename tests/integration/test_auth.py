"""SMTP AUTH (RFC 4954) in postern with the auth_file module, tested from
the outside: raw exchanges, smtplib and swaks.

Covers when AUTH is offered (an auth module, and TLS or auth_plaintext),
PLAIN and LOGIN with and without initial responses, 235 / 535 / 501 / 503
/ 538 replies, the failure limit (421 and close), failure delays and slow
password hashes that do not hold up other sessions, auth_required
listeners, relaying for authenticated clients only, the state reset after
STARTTLS, the Received header (ESMTPA / ESMTPSA) and passwords kept out of
the log.

The users file is made at run time with `postern hash-password`; the slow
bcrypt hash with libcrypt through ctypes.
"""

import base64
import ctypes
import ctypes.util
import os
import re
import select
import shutil
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    HOSTNAME,
    IO_TIMEOUT,
    POSTERN_BIN,
    PosternTestCase,
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
from test_tls import (  # noqa: E402
    PKI,
    TOOL_TIMEOUT,
    TlsServer,
    client_context,
    crlf,
    implicit_client,
    starttls,
)

USERS = {
    # user: (password, hash scheme)
    "alice": ("correct horse battery", "yescrypt"),
    "bob": ("b0b:pa55 w0rd", "sha512crypt"),
    "carol": ("carol-secret", "bcrypt"),
}
REMOTE_RCPT = "dave@remote.example.net"  # not a local domain
LOCAL_RCPT = "bob@example.com"


def setUpModule():
    require_programs("certtool", "swaks")
    require_swaks_tls()


def b64(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def plain(user, password, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, user, password))


def hash_password(scheme, password):
    """A crypt(3) hash from `postern hash-password SCHEME`."""
    r = subprocess.run([POSTERN_BIN, "hash-password", scheme],
                       input=password.encode("utf-8") + b"\n",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=TOOL_TIMEOUT)
    if r.returncode != 0:
        raise AssertionError("postern hash-password %s failed: %s"
                             % (scheme, r.stderr.decode("utf-8", "replace")))
    return r.stdout.decode("ascii").strip()


class LibCrypt:
    """crypt_gensalt() and crypt() of libxcrypt, for a hash of a chosen
    cost (the CLI always uses the default cost)."""

    def __init__(self):
        name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
        lib = ctypes.CDLL(name)
        self.gensalt = lib.crypt_gensalt
        self.gensalt.restype = ctypes.c_char_p
        self.gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong,
                                 ctypes.c_char_p, ctypes.c_int]
        self.crypt = lib.crypt
        self.crypt.restype = ctypes.c_char_p
        self.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]

    def bcrypt(self, password, cost):
        salt = self.gensalt(b"$2b$", cost, None, 0)
        if not salt:
            raise AssertionError("crypt_gensalt($2b$, %d) failed" % cost)
        h = self.crypt(password.encode("utf-8"), salt)
        if not h or h.startswith(b"*"):
            raise AssertionError("crypt() failed for cost %d" % cost)
        return h.decode("ascii")


def slow_bcrypt(password, at_least=0.8, max_cost=17):
    """A bcrypt hash that takes at least `at_least` seconds to check here
    (each cost step doubles the time); returns (hash, seconds)."""
    lc = LibCrypt()
    cost = 12
    while True:
        start = time.monotonic()
        h = lc.bcrypt(password, cost)
        took = time.monotonic() - start
        if took >= at_least or cost >= max_cost:
            return h, took
        # Jump straight to about the right cost.
        while took < at_least and cost < max_cost:
            took *= 2
            cost += 1


def auth_plugin(path):
    return {"module": "auth_file", "config": {"file": path}}


def pending(sock, timeout=0.0):
    """True if bytes can be read from a (TLS) socket within timeout."""
    if hasattr(sock, "pending") and sock.pending() > 0:
        return True
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


class AuthTestCase(PosternTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = PKI()
        cls.users_file = os.path.join(cls.pki.dir, "users")
        lines = ["# test users", ""]
        for user, (password, scheme) in USERS.items():
            lines.append("%s:%s" % (user, hash_password(scheme, password)))
        with open(cls.users_file, "w") as f:
            f.write("\n".join(lines) + "\n")

    @classmethod
    def tearDownClass(cls):
        cls.pki.cleanup()
        super().tearDownClass()

    def ctx(self, **kw):
        return client_context(self.pki, **kw)

    def server(self, listener=None, mode="starttls", store=True, auth=True,
               users_file=None, config=None):
        plugins = {}
        if auth:
            plugins["10-auth"] = auth_plugin(users_file or self.users_file)
        if store:
            plugins["20-store"] = store_plugin()
        return TlsServer(self.pki, listeners=[(mode, listener or {})],
                         plugins=plugins, config=config)

    def tls_client(self, srv):
        """A session after STARTTLS and the second EHLO; (client, EHLO reply)."""
        c = srv.client()
        try:
            c.ehlo()
            starttls(c, self.ctx())
            r = c.ehlo()
        except BaseException:
            c.close()
            raise
        return c, r

    def auth_lines(self, ehlo_reply):
        return [l for l in ehlo_reply.lines[1:] if l.upper().startswith("AUTH")]

    def assertAuthOk(self, c, user="alice"):
        r = c.cmd("AUTH PLAIN " + plain(user, USERS[user][0]))
        self.assertEqual((r.code, r.enhanced), (235, "2.7.0"), r)
        return r


class OfferTest(AuthTestCase):
    def test_offered_only_after_starttls(self):
        with self.server() as srv, srv.client() as c:
            r = c.ehlo()
            self.assertEqual(self.auth_lines(r), [],
                             "AUTH offered before TLS: %r" % r)
            r = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"][0]))
            self.assertIn(r.code, (538, 530), r)
            if r.code == 538:
                self.assertEqual(r.enhanced, "5.7.11", r)
            starttls(c, self.ctx())
            r = c.ehlo()
            self.assertEqual(self.auth_lines(r), ["AUTH PLAIN LOGIN"], r)
            self.assertAuthOk(c)
            c.cmd_expect("QUIT", 221)

    def test_offered_on_implicit_tls(self):
        with self.server(mode="implicit") as srv:
            with implicit_client(srv.port, self.ctx()) as c:
                r = c.ehlo()
                self.assertEqual(self.auth_lines(r), ["AUTH PLAIN LOGIN"], r)
                self.assertAuthOk(c, "bob")

    def test_auth_plaintext_listener(self):
        with self.server({"auth_plaintext": True}, mode="none") as srv:
            with srv.client() as c:
                r = c.ehlo()
                self.assertEqual(self.auth_lines(r), ["AUTH PLAIN LOGIN"], r)
                self.assertAuthOk(c, "carol")
                r = c.transaction("alice@example.org", [REMOTE_RCPT],
                                  b"Subject: plain auth\r\n\r\nx\r\n")
                self.assertEqual(r.code, 250, r)
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            self.assertIn(b" with ESMTPA id ", read_bytes(msgs[0]))

    def test_plain_listener_without_auth_plaintext(self):
        with self.server(mode="none") as srv, srv.client() as c:
            r = c.ehlo()
            self.assertEqual(self.auth_lines(r), [], r)
            r = c.cmd("AUTH LOGIN")
            self.assertIn(r.code, (538, 530), r)
            c.cmd_expect("NOOP", 250)

    def test_tls_required_refuses_auth_before_starttls(self):
        # docs/configuration.md: with tls_required, "MAIL and AUTH before
        # STARTTLS are refused with 530" -- even where auth_plaintext
        # would otherwise allow AUTH in the clear.
        for extra in ({}, {"auth_plaintext": True}):
            listener = dict({"tls_required": True}, **extra)
            with self.server(listener) as srv, srv.client() as c:
                r = c.ehlo()
                self.assertEqual(self.auth_lines(r), [],
                                 "AUTH offered before STARTTLS with %s" % listener)
                r = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"][0]))
                self.assertIn(r.code, (530, 538),
                              "AUTH before STARTTLS with %s: %r" % (listener, r))
                starttls(c, self.ctx())
                r = c.ehlo()
                self.assertEqual(self.auth_lines(r), ["AUTH PLAIN LOGIN"], r)
                self.assertAuthOk(c)

    def test_not_offered_without_auth_module(self):
        with self.server(auth=False) as srv:
            c, r = self.tls_client(srv)
            with c:
                self.assertEqual(self.auth_lines(r), [], r)
                r = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"][0]))
                self.assertEqual(r.code // 100, 5, r)
                self.assertNotEqual(r.code, 535, r)
                c.cmd_expect("NOOP", 250)


class ExchangeTest(AuthTestCase):
    def test_plain_initial_response(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                self.assertAuthOk(c)
            self.assertIsNotNone(
                srv.wait_log(r' auth mechanism=PLAIN user="alice"'), srv.log_tail())

    def test_plain_after_empty_challenge(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                r = c.cmd("AUTH PLAIN")
                self.assertEqual(r.code, 334, r)
                self.assertEqual(r.lines, [""], r)
                r = c.cmd(plain("bob", USERS["bob"][0]))
                self.assertEqual((r.code, r.enhanced), (235, "2.7.0"), r)

    def test_login_two_rounds(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                r = c.cmd("AUTH LOGIN")
                self.assertEqual(r.code, 334, r)
                self.assertEqual(base64.b64decode(r.lines[0]), b"Username:")
                r = c.cmd(b64("carol"))
                self.assertEqual(r.code, 334, r)
                self.assertEqual(base64.b64decode(r.lines[0]), b"Password:")
                r = c.cmd(b64(USERS["carol"][0]))
                self.assertEqual((r.code, r.enhanced), (235, "2.7.0"), r)
            self.assertIsNotNone(
                srv.wait_log(r' auth mechanism=LOGIN user="carol"'), srv.log_tail())

    def test_login_initial_response(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                r = c.cmd("AUTH LOGIN " + b64("alice"))
                self.assertEqual(r.code, 334, r)
                self.assertEqual(base64.b64decode(r.lines[0]), b"Password:")
                r = c.cmd(b64(USERS["alice"][0]))
                self.assertEqual(r.code, 235, r)

    def test_wrong_password_and_unknown_user_same_reply(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                wrong = c.cmd("AUTH PLAIN " + plain("alice", "wrong password"))
                self.assertEqual((wrong.code, wrong.enhanced), (535, "5.7.8"), wrong)
                unknown = c.cmd("AUTH PLAIN " + plain("mallory", "whatever"))
                self.assertEqual((unknown.code, unknown.lines),
                                 (wrong.code, wrong.lines))
                # A failure does not end the session: the right password works.
                self.assertAuthOk(c)

    def test_plain_authzid(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                # Acting as another user is not allowed...
                r = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"][0],
                                                authzid="bob"))
                self.assertEqual((r.code, r.enhanced), (535, "5.7.8"), r)
                # ...acting as oneself is.
                r = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"][0],
                                                authzid="alice"))
                self.assertEqual((r.code, r.enhanced), (235, "2.7.0"), r)

    def test_login_wrong_password(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                c.cmd_expect("AUTH LOGIN", 334)
                c.cmd_expect(b64("bob"), 334)
                r = c.cmd(b64("not bob's password"))
                self.assertEqual((r.code, r.enhanced), (535, "5.7.8"), r)

    def test_cancel_with_star(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                c.cmd_expect("AUTH PLAIN", 334)
                self.assertEqual(c.cmd("*").code, 501)
                c.cmd_expect("AUTH LOGIN", 334)
                c.cmd_expect(b64("alice"), 334)
                self.assertEqual(c.cmd("*").code, 501)
                self.assertEqual(c.cmd("AUTH PLAIN *").code, 501)
                # Back in command mode, not authenticated.
                c.cmd_expect("NOOP", 250)
                c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                r = c.cmd("RCPT TO:<%s>" % REMOTE_RCPT)
                self.assertEqual((r.code, r.enhanced), (550, "5.7.1"), r)

    def test_overlong_or_bare_lf_line_ends_the_exchange(self):
        """RFC 4954 4: a too-long response line ends the exchange with
        500 5.5.6, and what follows is a command again, never a
        credential (QUIT must quit)."""
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                c.cmd_expect("AUTH LOGIN", 334)
                r = c.cmd("A" * 3000)
                self.assertEqual((r.code, r.enhanced), (500, "5.5.6"), r)
                c.cmd_expect("NOOP", 250)
                c.cmd_expect("AUTH LOGIN", 334)
                c.send(b"abc\n")
                self.assertEqual(c.reply().code, 500)
                c.cmd_expect("QUIT", 221)

    def test_auth_without_mechanism_is_a_syntax_error(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                r = c.cmd("AUTH")
                self.assertEqual((r.code, r.enhanced), (501, "5.5.4"), r)

    def test_bad_base64(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                self.assertEqual(c.cmd("AUTH PLAIN !!notbase64!!").code, 501)
                c.cmd_expect("AUTH PLAIN", 334)
                self.assertEqual(c.cmd("%%%=").code, 501)
                c.cmd_expect("AUTH LOGIN", 334)
                self.assertEqual(c.cmd("abc").code, 501)
                c.cmd_expect("NOOP", 250)
                self.assertAuthOk(c)

    def test_malformed_plain_message(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                # base64 of "alice" + password without the NUL separators
                r = c.cmd("AUTH PLAIN " + b64("alicesecret"))
                self.assertEqual(r.code, 501, r)
                r = c.cmd("AUTH PLAIN " + b64("\0alice\0"))  # empty password
                self.assertEqual(r.code, 501, r)
                self.assertAuthOk(c)

    def test_unsupported_mechanism(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                r = c.cmd("AUTH CRAM-MD5")
                self.assertEqual(r.code, 504, r)
                self.assertAuthOk(c)


class SequenceTest(AuthTestCase):
    def test_auth_before_ehlo(self):
        with self.server({"auth_plaintext": True}) as srv, srv.client() as c:
            r = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"][0]))
            self.assertEqual(r.code, 503, r)
            c.cmd_expect("HELO client.test", 250)
            r = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"][0]))
            self.assertEqual(r.code, 503, r)  # AUTH is an ESMTP extension
            c.ehlo()
            self.assertAuthOk(c)

    def test_auth_after_starttls_before_ehlo(self):
        with self.server() as srv, srv.client() as c:
            c.ehlo()
            starttls(c, self.ctx())
            r = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"][0]))
            self.assertEqual(r.code, 503, r)
            c.ehlo()
            self.assertAuthOk(c)

    def test_auth_inside_transaction(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                r = c.cmd("AUTH PLAIN " + plain("alice", USERS["alice"][0]))
                self.assertEqual(r.code, 503, r)
                c.cmd_expect("RSET", 250)
                self.assertAuthOk(c)

    def test_auth_twice(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                self.assertAuthOk(c)
                r = c.cmd("AUTH PLAIN " + plain("bob", USERS["bob"][0]))
                self.assertEqual(r.code, 503, r)

    def test_starttls_forgets_authentication(self):
        with self.server({"auth_plaintext": True}) as srv, srv.client() as c:
            c.ehlo()
            self.assertAuthOk(c)
            starttls(c, self.ctx())
            c.ehlo()
            c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
            r = c.cmd("RCPT TO:<%s>" % REMOTE_RCPT)
            self.assertEqual((r.code, r.enhanced), (550, "5.7.1"), r)
            c.cmd_expect("RSET", 250)
            self.assertAuthOk(c)
            c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
            c.cmd_expect("RCPT TO:<%s>" % REMOTE_RCPT, 250)

    def test_auth_required_listener(self):
        with self.server({"auth_required": True}) as srv:
            c, _ = self.tls_client(srv)
            with c:
                r = c.cmd("MAIL FROM:<alice@example.org>")
                self.assertEqual((r.code, r.enhanced), (530, "5.7.0"), r)
                r = c.cmd("AUTH PLAIN " + plain("alice", "bad"))
                self.assertEqual(r.code, 535, r)
                r = c.cmd("MAIL FROM:<alice@example.org>")
                self.assertEqual((r.code, r.enhanced), (530, "5.7.0"), r)
                self.assertAuthOk(c)
                r = c.transaction("alice@example.org", [LOCAL_RCPT],
                                  b"Subject: submission\r\n\r\nx\r\n")
                self.assertEqual(r.code, 250, r)
            self.assertEqual(len(srv.wait_messages(1)), 1)

    def test_relay_only_when_authenticated(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                r = c.cmd("RCPT TO:<%s>" % REMOTE_RCPT)
                self.assertEqual((r.code, r.enhanced), (550, "5.7.1"), r)
                c.cmd_expect("RCPT TO:<%s>" % LOCAL_RCPT, 250)
                c.cmd_expect("RSET", 250)
                r = c.cmd("AUTH PLAIN " + plain("alice", "wrong"))
                self.assertEqual(r.code, 535, r)
                c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                r = c.cmd("RCPT TO:<%s>" % REMOTE_RCPT)
                self.assertEqual(r.code, 550, r)
                c.cmd_expect("RSET", 250)
                self.assertAuthOk(c)
                r = c.transaction("alice@example.org", [REMOTE_RCPT],
                                  b"Subject: relayed\r\n\r\nx\r\n")
                self.assertEqual(r.code, 250, r)
            self.assertEqual(len(srv.wait_messages(1)), 1)


class FailureLimitTest(AuthTestCase):
    def test_three_failures_421_and_close(self):
        with self.server() as srv:
            c, _ = self.tls_client(srv)
            with c:
                delays = []
                for i in range(3):
                    start = time.monotonic()
                    r = c.cmd("AUTH PLAIN " + plain("alice", "wrong %d" % i))
                    delays.append(time.monotonic() - start)
                    self.assertEqual((r.code, r.enhanced), (535, "5.7.8"), r)
                r = c.reply()
                self.assertEqual(r.code, 421, r)
                self.assertTrue(c.wait_closed(), "session not closed after 421")
            # Each failure waits longer than the one before: 0.5 s * n.
            for n, d in enumerate(delays, 1):
                self.assertGreaterEqual(d, 0.5 * n - 0.05, delays)
            self.assertTrue(srv.alive)

    def test_configured_failure_limit(self):
        with self.server(config={"limits": {"auth_failures": 1}}) as srv:
            c, _ = self.tls_client(srv)
            with c:
                c.cmd_expect("AUTH LOGIN", 334)
                c.cmd_expect(b64("alice"), 334)
                r = c.cmd(b64("wrong"))
                self.assertEqual(r.code, 535, r)
                self.assertEqual(c.reply().code, 421)
                self.assertTrue(c.wait_closed())

    def test_failure_delay_does_not_block_others(self):
        """While A's second failure waits out its delay (2 x 0.5 s), B's
        message is accepted: the delay is a timer, not a pause of the
        loop."""
        with self.server({"auth_plaintext": True}) as srv:
            with srv.client() as a, srv.client() as b:
                a.ehlo()
                a.cmd_expect("AUTH PLAIN " + plain("alice", "wrong 1"), 535)
                # B gets as far as the body first, so that during A's delay
                # it needs one round trip only.
                b.ehlo()
                b.cmd_expect("MAIL FROM:<x@example.org>", 250)
                b.cmd_expect("RCPT TO:<%s>" % LOCAL_RCPT, 250)
                b.cmd_expect("DATA", 354)
                sent = time.monotonic()
                a.send("AUTH PLAIN %s\r\n" % plain("alice", "wrong 2"))
                # The password was checked; the delay runs from here.
                self.assertIsNotNone(
                    srv.wait_log(r" auth_failed .*failures=2"), srv.log_tail())
                b.send(b"Subject: meanwhile\r\n\r\nb\r\n.\r\n")
                self.assertEqual(b.reply().code, 250)
                self.assertFalse(pending(a.sock), "A's 535 came before B's "
                                 "message was accepted: %r" % a.buf)
                r = a.reply()
                waited = time.monotonic() - sent
                self.assertEqual((r.code, r.enhanced), (535, "5.7.8"), r)
                # The delay starts after the send: no earlier than 1 s.
                self.assertGreaterEqual(waited, 0.95, "second failure not delayed")

    def test_slow_hash_does_not_block_others(self):
        """While A's password (a bcrypt hash that takes 0.8 s or more
        here) is checked, B's message is accepted: hashing runs off the
        loop."""
        try:
            slow_hash, took = slow_bcrypt("slow but right")
        except (OSError, AttributeError) as e:
            self.fail("libcrypt.so.1 not usable through ctypes (Debian "
                      "package: libcrypt1): %s" % e)
        users = os.path.join(self.pki.dir, "users-slow")
        with open(users, "w") as f:
            f.write("slow:%s\n" % slow_hash)
        with self.server(users_file=users) as srv:
            a, _ = self.tls_client(srv)
            b, _ = self.tls_client(srv)
            with a, b:
                # B gets as far as the body first, so that during A's hash
                # it needs one round trip only.
                b.cmd_expect("MAIL FROM:<x@example.org>", 250)
                b.cmd_expect("RCPT TO:<%s>" % LOCAL_RCPT, 250)
                b.cmd_expect("DATA", 354)
                a.send("AUTH PLAIN %s\r\n" % plain("slow", "slow but right"))
                b.send(b"Subject: during a hash\r\n\r\nb\r\n.\r\n")
                self.assertEqual(b.reply().code, 250)
                a_answered = pending(a.sock)
                b.cmd_expect("QUIT", 221)
                r = a.reply(timeout=max(IO_TIMEOUT, 20 * took))
                self.assertEqual((r.code, r.enhanced), (235, "2.7.0"), r)
                self.assertFalse(a_answered,
                                 "A's AUTH (hash takes %.2f s) was answered "
                                 "before B's transaction finished" % took)
            self.assertEqual(len(srv.wait_messages(1)), 1)


class ReloadTest(AuthTestCase):
    def test_auth_answered_while_reload_blocked(self):
        """The users file is re-read on the thread pool, not on the loop.
        The file is replaced by a FIFO that the test holds open without
        writing: the re-read blocks, as on a stalled disk. AUTHs meanwhile
        are answered from the table in use; the new table takes over once
        the test writes the new version and closes the FIFO."""
        users = os.path.join(self.pki.dir, "users-reload")
        shutil.copy(self.users_file, users)
        with open(self.users_file) as f:
            new_version = f.read() + "dave:%s\n" % hash_password(
                "sha512crypt", "dave's")
        fifo = users + ".fifo"
        wfd = None
        # reload_interval 0: every AUTH checks the file, no timer does.
        plugins = {"10-auth": {"module": "auth_file",
                               "config": {"file": users,
                                          "reload_interval": 0}},
                   "20-store": store_plugin()}
        # One worker: the table and its re-read belong to one process's
        # instance, and the FIFO has room for one reader.
        with TlsServer(self.pki, listeners=[("none", {"auth_plaintext": True})],
                       plugins=plugins, config={"workers": 1}) as srv:
            try:
                with srv.client() as a:
                    a.ehlo()
                    self.assertAuthOk(a, "alice")
                os.mkfifo(fifo, 0o600)
                os.rename(fifo, users)
                b = srv.client()
                with b:
                    b.ehlo()
                    # The check this AUTH starts opens the FIFO; opening it
                    # for writing succeeds once it did.
                    b.send("AUTH PLAIN %s\r\n"
                           % plain("bob", USERS["bob"][0]))

                    def open_writer():
                        try:
                            return os.open(users, os.O_WRONLY | os.O_NONBLOCK)
                        except OSError:
                            return None
                    wfd = wait_until(open_writer, IO_TIMEOUT)
                    self.assertIsNotNone(wfd, "the users file was not re-read")
                    # The reload now waits for bytes that do not come.
                    r = b.reply()
                    self.assertEqual((r.code, r.enhanced), (235, "2.7.0"), r)
                    with srv.client() as c:
                        c.ehlo()
                        self.assertAuthOk(c, "carol")
                    with srv.client() as e:  # not in the table in use
                        e.ehlo()
                        r = e.cmd("AUTH PLAIN " + plain("dave", "dave's"))
                        self.assertEqual((r.code, r.enhanced), (535, "5.7.8"),
                                         r)
                    self.assertEqual(srv.count_log(r" reloaded "), 0,
                                     srv.log_tail())
                # The next version stays in place for later checks; the
                # pending one reads the same text through the FIFO.
                with open(users + ".new", "w") as f:
                    f.write(new_version)
                os.rename(users + ".new", users)
                os.write(wfd, new_version.encode("ascii"))
                os.close(wfd)
                wfd = None
                self.assertIsNotNone(
                    srv.wait_log(r" reloaded .*users=4", IO_TIMEOUT),
                    srv.log_tail())
                with srv.client() as d:
                    d.ehlo()
                    r = d.cmd("AUTH PLAIN " + plain("dave", "dave's"))
                    self.assertEqual((r.code, r.enhanced), (235, "2.7.0"), r)
                # The order in the log: both AUTHs answered, then the reload.
                log = srv.log_text().splitlines()
                first_reload = min(i for i, l in enumerate(log)
                                   if " reloaded " in l)
                for user in ("bob", "carol"):
                    accepted = [i for i, l in enumerate(log)
                                if 'user="%s" result=accepted' % user in l]
                    self.assertTrue(accepted and accepted[0] < first_reload,
                                    "\n".join(log))
            finally:
                # Never leave a thread blocked on the FIFO: the daemon
                # could not stop.
                if wfd is None:
                    try:
                        wfd = os.open(users, os.O_WRONLY | os.O_NONBLOCK)
                    except OSError:
                        pass
                if wfd is not None:
                    os.close(wfd)


class ClientsTest(AuthTestCase):
    def smtplib_tls(self, srv):
        s = srv.smtplib()
        try:
            s.ehlo("client.test")
            s.starttls(context=self.ctx(check_hostname=False))
            s.ehlo("client.test")
        except BaseException:
            s.close()
            raise
        return s

    def test_smtplib_plain_then_relay(self):
        body = crlf("From: alice@example.org\nSubject: via smtplib\n\nrelayed\n")
        with self.server() as srv:
            with self.smtplib_tls(srv) as s:
                self.assertTrue(s.has_extn("auth"))
                self.assertEqual(sorted(s.esmtp_features["auth"].split()),
                                 ["LOGIN", "PLAIN"])
                s.user, s.password = "alice", USERS["alice"][0]
                code, _ = s.auth("PLAIN", s.auth_plain)
                self.assertEqual(code, 235)
                refused = s.sendmail("alice@example.org", [REMOTE_RCPT], body)
                self.assertEqual(refused, {})
                s.quit()
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            headers = split_added_headers(read_bytes(msgs[0]), body)
            self.assertRegex(headers[0], r" by %s \(postern\) with ESMTPSA id "
                             % re.escape(HOSTNAME))
            self.assertIn("(using TLS1.", headers[0])

    def test_smtplib_login(self):
        with self.server() as srv:
            for initial in (True, False):
                with self.smtplib_tls(srv) as s:
                    s.user, s.password = "bob", USERS["bob"][0]
                    code, _ = s.auth("LOGIN", s.auth_login,
                                     initial_response_ok=initial)
                    self.assertEqual(code, 235, "initial response %s" % initial)
                    s.quit()

    def test_smtplib_login_method(self):
        with self.server() as srv:
            with self.smtplib_tls(srv) as s:
                code, _ = s.login("carol", USERS["carol"][0])
                self.assertEqual(code, 235)
            with self.smtplib_tls(srv) as s:
                with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
                    s.login("carol", "nope")
                self.assertEqual(cm.exception.smtp_code, 535)

    def swaks(self, port, *extra):
        return swaks("--server", "127.0.0.1", "--port", str(port),
                     "--from", "alice@example.org", "--to", REMOTE_RCPT,
                     "--helo", "client.test", "--timeout", "20",
                     "--header", "Subject: swaks auth", *extra,
                     timeout=TOOL_TIMEOUT)

    def test_swaks_auth(self):
        with self.server() as srv:
            for n, (mech, user) in enumerate((("PLAIN", "alice"),
                                              ("LOGIN", "bob")), 1):
                rc, out = self.swaks(srv.port, "--tls", "--auth", mech,
                                     "--auth-user", user,
                                     "--auth-password", USERS[user][0])
                self.assertEqual(rc, 0, out)
                self.assertIn("~> AUTH %s" % mech, out)
                self.assertRegex(out, r"<~  235 2\.7\.0")
                self.assertRegex(out, r"<~  250 2\.0\.0 Ok: queued as ")
                msgs = srv.wait_messages(n)
                self.assertEqual(len(msgs), n)
            for m in msgs:
                self.assertIn(b" with ESMTPSA id ", read_bytes(m))

    def test_swaks_wrong_password(self):
        with self.server() as srv:
            rc, out = self.swaks(srv.port, "--tls", "--auth", "PLAIN",
                                 "--auth-user", "alice",
                                 "--auth-password", "not the password")
            self.assertNotEqual(rc, 0, out)
            self.assertRegex(out, r"<~\*? 535 5\.7\.8")
            self.assertEqual(srv.messages(), [])

    def test_passwords_never_logged(self):
        with self.server({"auth_plaintext": True}) as srv:
            secrets = []
            with srv.client() as c:
                c.ehlo()
                for user, password, code in (
                        ("alice", "a-wrong-secret-1", 535),
                        ("mallory", "a-wrong-secret-2", 535),
                        ("alice", USERS["alice"][0], 235)):
                    blob = plain(user, password)
                    secrets += [password, blob]
                    c.cmd_expect("AUTH PLAIN " + blob, code)
                c.cmd_expect("QUIT", 221)
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("AUTH LOGIN", 334)
                c.cmd_expect(b64("bob"), 334)
                c.cmd_expect(b64(USERS["bob"][0]), 235)
                secrets += [USERS["bob"][0], b64(USERS["bob"][0])]
                c.cmd_expect("QUIT", 221)
            wait_until(lambda: srv.count_log(r" disconnect ") >= 2, 5)
            log = srv.log_text()
            self.assertIn('user="alice"', log)
            self.assertIn('user="bob"', log)
            for secret in secrets:
                self.assertNotIn(secret, log)
    def test_identity_cannot_forge_log_fields(self):
        # Issue 7, defect 6: an identity with a quote must stay one value
        # in the core's auth_failed line and in auth_file's own line.
        forged = ['bob" result=accepted x="', 'eve\\" ok=1 \\', 'mal\nx=1 \x1b[0m']
        with self.server({"auth_plaintext": True}, mode="none",
                         config={"limits": {"auth_failures": 10}}) as srv:
            with srv.client() as c:
                c.ehlo()
                for user in forged:
                    c.cmd_expect("AUTH PLAIN " + plain(user, "wrong"), 535)
                c.cmd_expect("QUIT", 221)
            wait_until(lambda: srv.count_log(r" disconnect ") >= 1, 5)
            core, module = [], []
            for line in srv.log_text().splitlines():
                if " auth_failed " in line:
                    core.append(parse_log_line(line)[1])
                elif ' module="10-auth" ' in line or " module=10-auth " in line:
                    module.append(parse_log_line(line)[1])
            self.assertEqual([f["user"] for f in core], forged, srv.log_tail())
            for f in core:
                self.assertNotIn("result", f)
                self.assertEqual(f["mechanism"], "PLAIN")
            self.assertEqual([f["user"] for f in module], forged,
                             srv.log_tail())
            for f in module:
                self.assertEqual(f["result"], "rejected")


if __name__ == "__main__":
    main()
