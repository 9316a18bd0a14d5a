"""Regression tests for the hardening issue (7): each case reproduces a
defect found by a security review or a plugin trial against the real
daemon.

- BDAT content gets every check DATA content gets (header size, strict
  line endings).
- STARTTLS keeps what modules decided about the client at connect.
- Client bytes during a pending hook do not shorten the hook's time.
- A slow disk does not stall other sessions (spool I/O is off the loop).
- A module that resumes twice, or after the session closed, cannot
  misroute a reply or crash the daemon.
- Strings a pending handler borrowed stay valid across a disconnect.
"""

import os
import re
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    IO_TIMEOUT,
    PosternTestCase,
    Server,
    SlowSyscalls,
    async_plugin,
    main,
    read_bytes,
    read_envelope,
    require_programs,
    store_plugin,
    wait_until,
)
from test_tls import PKI, TlsServer, client_context, starttls  # noqa: E402


def setUpModule():
    require_programs("certtool", "strace")


def bdat_message(client, body, sender="a@example.org", rcpt="b@example.com"):
    """EHLO, MAIL, RCPT, then body in one BDAT LAST; the reply to it."""
    client.ehlo()
    client.cmd_expect("MAIL FROM:<%s>" % sender, 250)
    client.cmd_expect("RCPT TO:<%s>" % rcpt, 250)
    client.send(b"BDAT %d LAST\r\n" % len(body) + body)
    return client.reply()


class BdatChecksTest(PosternTestCase):
    """Defect 1: every check that applies to DATA content applies to BDAT
    content."""

    def test_header_size_applies_to_bdat(self):
        header = b"X-Big: " + b"h" * 3000 + b"\r\n"
        body = b"Subject: big header\r\n" + header + b"\r\nbody\r\n"
        with Server(plugins={"20-store": store_plugin()},
                    config={"limits": {"header_size": 1024}}) as srv:
            with srv.client() as c:
                r = bdat_message(c, body)
                self.assertEqual((r.code, r.enhanced), (552, "5.3.4"), r)
            with srv.client() as c:
                r = c.transaction("a@example.org", ["b@example.com"], body,
                                  ehlo=True)
                self.assertEqual((r.code, r.enhanced), (552, "5.3.4"), r)
            self.assertEqual(srv.messages(), [])

    def test_strict_line_endings_apply_to_bdat(self):
        body = b"Subject: smuggle\r\n\r\nline1\n.\nline2\r\n"
        with Server(plugins={"20-store": store_plugin()}) as srv:
            with srv.client() as c:
                r = bdat_message(c, body)
                self.assertEqual((r.code, r.enhanced), (550, "5.6.0"), r)
                # The transaction is over; the session goes on.
                c.cmd_expect("NOOP", 250)
            self.assertEqual(srv.messages(), [])

    def test_bare_cr_at_the_end_of_a_chunk_pair(self):
        """A CR ending one chunk and an LF starting the next are a real
        CRLF; a CR ending the last chunk is bare."""
        with Server(plugins={"20-store": store_plugin()}) as srv:
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                c.cmd_expect("RCPT TO:<b@example.com>", 250)
                first = b"Subject: split\r\n\r\nline\r"
                c.send(b"BDAT %d\r\n" % len(first) + first)
                c.expect(250)
                c.send(b"BDAT 6 LAST\r\nend\r\n\r")
                r = c.reply()
                self.assertEqual((r.code, r.enhanced), (550, "5.6.0"), r)
            self.assertEqual(srv.messages(), [])

    def test_normalise_applies_to_bdat(self):
        body = b"Subject: lf\r\n\r\nline1\nline2\r\n"
        with Server(plugins={"20-store": store_plugin()},
                    config={"line_endings": "normalise"}) as srv:
            with srv.client() as c:
                r = bdat_message(c, body)
                self.assertEqual(r.code, 250, r)
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            self.assertTrue(read_bytes(msgs[0]).endswith(
                b"\r\n\r\nline1\r\nline2\r\n"))


class BdatOutsideTransactionTest(PosternTestCase):
    """A BDAT chunk refused outside a transaction changes nothing: no
    transaction is made for it, so no reset hook runs with an empty id."""

    def test_reset_hook_sees_only_real_transactions(self):
        self.require_plugin("test_reset")
        with Server(plugins={"10-reset": {"module": "test_reset"}}) as srv:
            with srv.client() as c:
                c.ehlo()
                c.send(b"BDAT 5 LAST\r\nhello")
                r = c.reply()
                self.assertEqual((r.code, r.enhanced), (503, "5.5.1"), r)
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                c.cmd_expect("RSET", 250)
                c.cmd_expect("QUIT", 221)
            self.assertIsNotNone(srv.wait_log(r"disconnect reason=quit"))
            ids = re.findall(r"test_reset id=<([^>]*)>", srv.log_text())
            self.assertEqual(len(ids), 1, ids)
            self.assertRegex(ids[0], r"^[0-9a-f]{16}$")


class RecipientSetTest(PosternTestCase):
    """The same mailbox twice is kept once (local parts are case-sensitive,
    RFC 5321 2.4; domains are not), also among thousands of recipients
    (a hash set, not a scan per RCPT)."""

    def send(self, srv, rcpts):
        with srv.client(timeout=60) as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.send(b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts))
            for r in rcpts:
                self.assertEqual(c.reply(timeout=30).code, 250, r)
            c.cmd_expect("DATA", 354)
            c.send(b"Subject: many\r\n\r\nx\r\n.\r\n")
            r = c.reply(timeout=30)
            self.assertEqual(r.code, 250, r)
        msgs = srv.wait_messages(1)
        self.assertEqual(len(msgs), 1)
        return read_envelope(srv.maildir, msgs[0])["rcpt_to"]

    def test_case_rules(self):
        with Server(plugins={"20-store": store_plugin()}) as srv:
            got = self.send(srv, ["b@example.com", "b@EXAMPLE.com",
                                  "B@example.com", "c@example.com",
                                  "B@Example.Com"])
            self.assertEqual(got, ["b@example.com", "B@example.com",
                                   "c@example.com"])

    def test_thousands_of_recipients(self):
        n = 3000
        rcpts = ["u%d@example.com" % i for i in range(n)]
        rcpts += ["U%d@EXAMPLE.COM" % i for i in range(0, n, 10)]  # distinct
        rcpts += ["u%d@Example.com" % i for i in range(0, n, 7)]  # duplicates
        with Server(plugins={"20-store": store_plugin()},
                    config={"limits": {"recipients": 5000}}) as srv:
            got = self.send(srv, rcpts)
        want = ["u%d@example.com" % i for i in range(n)]
        want += ["U%d@EXAMPLE.COM" % i for i in range(0, n, 10)]
        self.assertEqual(got, want)


class StartTlsVerdictTest(PosternTestCase):
    """Defect 2: EHLO, STARTTLS, EHLO does not wash away a verdict a
    module made at connect."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = PKI()

    @classmethod
    def tearDownClass(cls):
        cls.pki.cleanup()
        super().tearDownClass()

    def test_connect_verdict_survives_starttls(self):
        self.require_plugin("test_verdict")
        plugins = {"10-verdict": {"module": "test_verdict"},
                   "20-store": store_plugin()}
        with TlsServer(self.pki, plugins=plugins) as srv, srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<a@example.org>")
            self.assertEqual((r.code, r.text), (550, "5.7.1 listed at connect"),
                             r)
            starttls(c, client_context(self.pki))
            c.ehlo()
            r = c.cmd("MAIL FROM:<a@example.org>")
            self.assertEqual((r.code, r.text), (550, "5.7.1 listed at connect"),
                             r)


class PendingHookTimeoutTest(PosternTestCase):
    """Defect 3: a client that pipelines QUIT while the store hook works
    does not shorten the hook's time to the command timeout: it gets its
    250, then 221, and the message is not delivered twice."""

    def test_input_during_pending_store_keeps_hook_limit(self):
        hooks = {"store": {"delay": 2.5, "result": "accept"}}
        config = {"limits": {"command_timeout": 1, "data_timeout": 1}}
        with Server(plugins={"10-async": async_plugin(hooks)},
                    config=config) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(b"Subject: slow store\r\n\r\nbody\r\n.\r\n")
            self.assertIsNotNone(
                srv.wait_log(r"test_async pending hook=store", timeout=5))
            # Bytes while the hook is pending, longer than the command
            # timeout before it resumes.
            c.send(b"NO")
            time.sleep(1.2)
            c.send(b"OP\r\nQUIT\r\n")
            r = c.reply(timeout=10)
            self.assertEqual(r.code, 250, r)
            self.assertEqual(c.reply(timeout=5).code, 250)  # NOOP
            self.assertEqual(c.reply(timeout=5).code, 221)
            self.assertIsNone(re.search(r"reason=timeout", srv.log_text()))


class StrayResumeTest(PosternTestCase):
    """Defect 7: a second postern_resume() of the same call is detected,
    logged with the module instance and ignored."""

    PLUGINS = {"10-resume": {"module": "test_resume",
                             "config": {"delay": 0.2, "twice": True}}}

    def test_second_resume_is_not_delivered_to_the_next_command(self):
        self.require_plugin("test_resume")
        with Server(plugins=self.PLUGINS) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.send(b"RCPT TO:<u1@example.com>\r\n"
                   b"RCPT TO:<u2@example.com>\r\n"
                   b"RCPT TO:<u3@example.com>\r\n")
            for n in (1, 2, 3):
                r = c.reply(timeout=5)
                self.assertEqual(r.code, 550, r)
                self.assertEqual(r.text, "5.1.1 <u%d@example.com>: meant for "
                                 "<u%d@example.com>" % (n, n), r)
            c.cmd_expect("QUIT", 221)
            self.assertIsNotNone(srv.wait_log(
                r"error .*stray.*module=\"10-resume\"|"
                r"error .*module=\"10-resume\".*stray", timeout=3), srv.log_tail())

    def test_resume_after_the_session_closed(self):
        self.require_plugin("test_resume")
        with Server(plugins=self.PLUGINS) as srv:
            for _ in range(3):
                with srv.client() as c:
                    c.ehlo()
                    c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                    r = c.cmd("RCPT TO:<u1@example.com>", timeout=5)
                    self.assertEqual(r.code, 550, r)
                # closed; the stray resume comes 0.1 s later
            time.sleep(0.5)
            self.assertTrue(srv.alive, srv.log_tail())
            with srv.client() as c:
                c.cmd_expect("NOOP", 250)


class BorrowedStringsTest(PosternTestCase):
    """Defect 8: what accessors returned to a pending handler stays valid
    until its resume, even if the client disconnected meanwhile (ASan
    would report the use after free; without it the values would be
    garbage)."""

    def test_strings_survive_a_disconnect(self):
        self.require_plugin("test_resume")
        plugins = {"10-resume": {"module": "test_resume",
                                 "config": {"delay": 0.3}}}
        with Server(plugins=plugins) as srv:
            for i in range(3):
                c = srv.client()
                c.ehlo("helo%d.test" % i)
                c.cmd_expect("MAIL FROM:<sender%d@example.org>" % i, 250)
                c.send(b"RCPT TO:<gone%d@example.com>\r\n" % i)
                self.assertIsNotNone(srv.wait_log(r"connect client=", 2))
                time.sleep(0.05)
                c.abort()
            for i in range(3):
                self.assertIsNotNone(srv.wait_log(
                    r"test_resume kept rcpt=<gone%d@example\.com> "
                    r"from=<sender%d@example\.org> helo=<helo%d\.test>"
                    % (i, i, i), timeout=3), srv.log_tail())
            self.assertTrue(srv.alive)


class SlowDiskTest(PosternTestCase):
    """Defect 4: with every file write delayed by a second (strace fault
    injection on write and pwrite64, attached to the running daemon),
    another session's NOOPs are answered at once: no NOOP waits for the
    disk. The message itself is still accepted. (Logging is at "error" so
    the loop itself writes nothing while this runs.)"""

    DELAY = 1.0

    def test_slow_spool_writes_do_not_stall_other_sessions(self):
        # One worker, and strace on it: the loop that must not wait is
        # the worker's (the supervisor only watches).
        with Server(plugins={"20-discard": {"module": "discard"}},
                    config={"log_level": "error", "workers": 1}) as srv:
            self.assertTrue(wait_until(srv.worker_pids, IO_TIMEOUT))
            # Its modules are loaded once it accepts.
            with srv.client() as c:
                c.cmd_expect("NOOP", 250)
            with SlowSyscalls(srv.worker_pids()[0], "write,pwrite64",
                              self.DELAY):
                self._run(srv)

    def _run(self, srv):
        body = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 4000
        result = {}

        def sender():
            try:
                with srv.client(timeout=60) as c:
                    result["reply"] = c.transaction(
                        "a@example.org", ["b@example.com"], body, ehlo=True)
            except Exception as e:  # reported below
                result["error"] = repr(e)

        with srv.client(timeout=30) as probe:
            probe.ehlo()
            t = threading.Thread(target=sender, daemon=True)
            t.start()
            latencies = []
            while t.is_alive() and len(latencies) < 5000:
                t0 = time.monotonic()
                probe.cmd_expect("NOOP", 250, timeout=30)
                latencies.append(time.monotonic() - t0)
                time.sleep(0.01)
            t.join(60)
        self.assertNotIn("error", result)
        self.assertEqual(result["reply"].code, 250, result)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        sys.stderr.write("\nNOOPs during the upload: %d, median %.1f ms, "
                         "p99 %.1f ms, max %.1f ms\n"
                         % (len(latencies),
                            statistics.median(latencies) * 1e3, p99 * 1e3,
                            latencies[-1] * 1e3))
        # A NOOP that waited for a file write would take about DELAY.
        self.assertLess(latencies[-1], self.DELAY / 2, latencies[-10:])
        # The upload spanned several delayed writes: the probe ran meanwhile.
        self.assertGreater(len(latencies), 20, latencies)


if __name__ == "__main__":
    main()
