"""Every limit has a config key and is enforced with the right reply:
message and header size, recipients, errors, connections (total and per
IP), command and data timeouts, greet_pause."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    TIMER_GUARD,
    TIMER_SLACK,
    Client,
    PosternTestCase,
    Server,
    main,
    read_bytes,
    read_envelope,
    split_added_headers,
    store_plugin,
    wait_until,
)

STORE = {"20-store": store_plugin(envelope=True)}


def limited(**limits):
    return Server(plugins=STORE, config={"limits": limits})


class LimitsTest(PosternTestCase):
    def test_message_size(self):
        with limited(message_size=10000) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            line = b"y" * 78 + b"\r\n"
            c.send(b"Subject: big\r\n\r\n" + line * 300 + b".\r\n")
            r = c.reply()
            self.assertEqual(r.code, 552, r)
            self.assertEqual(r.enhanced, "5.3.4", r)
            # the session is still usable and the next message goes through
            body = b"Subject: small\r\n\r\n" + line * 10
            r = c.transaction("a@example.org", ["b@example.com"], body)
            self.assertEqual(r.code, 250, r)
            msgs = srv.wait_messages(1)
            time.sleep(0.2)
            self.assertEqual(len(srv.messages()), 1)
            split_added_headers(read_bytes(msgs[0]), body)
            self.assertEqual(srv.spool_files(), [])

    def test_message_size_bdat(self):
        with limited(message_size=10000) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            chunk = b"z" * 8000
            c.send(b"BDAT 8000\r\n" + chunk)
            r1 = c.reply()
            c.send(b"BDAT 8000 LAST\r\n" + chunk)
            r2 = c.reply()
            self.assertEqual(r1.code, 250, r1)
            self.assertEqual(r2.code, 552, r2)
            self.assertEqual(c.cmd("NOOP").code, 250)
            time.sleep(0.2)
            self.assertEqual(srv.messages(), [])

    def test_message_size_exact_limit_accepted(self):
        body = b"Subject: exact\r\n\r\n" + b"q" * 2000 + b"\r\n"
        # the limit applies to what the client sends (Received not counted)
        with limited(message_size=len(body)) as srv, srv.client() as c:
            c.ehlo()
            r = c.transaction("a@example.org", ["b@example.com"], body)
            self.assertEqual(r.code, 250, r)

    def test_header_size(self):
        with limited(header_size=2048) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"h" * 60)
                               for i in range(100))
            c.send(headers + b"\r\nshort body\r\n.\r\n")
            r = c.reply()
            self.assertEqual(r.code, 552, r)
            self.assertTrue(r.enhanced and r.enhanced.startswith("5.3."), r)
            # a big body under small headers is fine
            body = b"Subject: ok\r\n\r\n" + (b"b" * 70 + b"\r\n") * 100
            r = c.transaction("a@example.org", ["b@example.com"], body)
            self.assertEqual(r.code, 250, r)
            time.sleep(0.2)
            self.assertEqual(len(srv.messages()), 1)

    def test_hundred_recipients_default(self):
        with Server(plugins=STORE) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            for i in range(100):
                c.cmd_expect("RCPT TO:<r%d@example.com>" % i, 250)
            c.cmd_expect("DATA", 354)
            c.send(b"Subject: many\r\n\r\nhi\r\n.\r\n")
            self.assertEqual(c.reply().code, 250)
            msgs = srv.wait_messages(1)
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["rcpt_to"], ["r%d@example.com" % i
                                              for i in range(100)])

    def test_recipients_limit(self):
        with limited(recipients=100) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            # pipelined, as a bulk sender would
            c.send(b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i
                            for i in range(102)))
            replies = [c.reply() for _ in range(102)]
            self.assertEqual([r.code for r in replies[:100]], [250] * 100)
            for r in replies[100:]:
                self.assertEqual(r.code, 452, r)
                self.assertEqual(r.enhanced, "4.5.3", r)
            c.cmd_expect("DATA", 354)
            c.send(b"Subject: capped\r\n\r\nhi\r\n.\r\n")
            self.assertEqual(c.reply().code, 250)
            msgs = srv.wait_messages(1)
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(len(env["rcpt_to"]), 100)

    def test_errors_limit(self):
        errors = 3
        with limited(errors=errors) as srv, srv.client() as c:
            codes = []
            for _ in range(errors + 2):
                try:
                    r = c.cmd("BOGUS")
                except (OSError, AssertionError):
                    break
                codes.append(r.code)
                if r.code == 421:
                    break
            self.assertIn(421, codes, codes)
            # "errors" mistakes are answered before the session is cut
            self.assertGreaterEqual(codes.index(421), errors - 1, codes)
            self.assertLessEqual(codes.index(421), errors, codes)
            self.assertTrue(all(code == 500 for code in codes[:-1]), codes)
            self.assertTrue(c.wait_closed(), "not closed after 421")
            self.assertTrue(srv.alive)

    def test_connections_per_ip(self):
        with limited(connections_per_ip=2, exempt_networks=[]) as srv:
            a = srv.client()
            b = srv.client()
            with Client(srv.port) as third:
                r = third.reply()
                self.assertEqual(r.code, 421, r)
                self.assertTrue(third.wait_closed())
            # the first two still work
            self.assertEqual(a.cmd("NOOP").code, 250)
            self.assertEqual(b.cmd("NOOP").code, 250)
            a.cmd_expect("QUIT", 221)
            a.wait_closed()
            a.close()

            # a slot is free again once the server saw the close
            def greeted():
                with Client(srv.port) as c:
                    r = c.reply()
                    if r.code == 220:
                        c.cmd("QUIT")
                        return True
                    return False

            self.assertTrue(wait_until(greeted, 5.0, interval=0.2))
            b.close()

    def test_loopback_exempt_by_default(self):
        with limited(connections_per_ip=1) as srv:
            clients = [srv.client() for _ in range(3)]
            for c in clients:
                self.assertEqual(c.cmd("NOOP").code, 250)
                c.close()

    def test_total_connections(self):
        with limited(connections=3) as srv:
            clients = [srv.client() for _ in range(3)]
            with Client(srv.port) as extra:
                r = extra.reply()
                self.assertEqual(r.code, 421, r)
                self.assertTrue(r.enhanced and r.enhanced.startswith("4."), r)
                self.assertTrue(extra.wait_closed())
            for c in clients:
                self.assertEqual(c.cmd("NOOP").code, 250)
                c.close()

    def test_command_timeout(self):
        """A silent client is told 421 and closed, and not before the
        timeout (the timer restarts when the server reads the EHLO, which
        is sent after `start`)."""
        with limited(command_timeout=2) as srv, srv.client() as c:
            start = time.monotonic()
            c.ehlo()
            r = c.reply(timeout=TIMER_GUARD)
            elapsed = time.monotonic() - start
            self.assertEqual((r.code, r.enhanced), (421, "4.4.2"), r)
            self.assertGreaterEqual(elapsed, 2 - TIMER_SLACK)
            self.assertTrue(c.wait_closed())

    def test_command_timeout_reset_by_activity(self):
        """A client that talks more often than the timeout outlives it:
        each command restarts the timer."""
        timeout = 2
        with limited(command_timeout=timeout) as srv, srv.client() as c:
            start = time.monotonic()
            while time.monotonic() - start < timeout * 1.5:
                time.sleep(timeout / 8)
                self.assertEqual(c.cmd("NOOP").code, 250)

    def test_data_timeout(self):
        """A client that stops in the middle of the data is told 421 and
        closed, not before the data timeout, and nothing is kept."""
        with limited(data_timeout=2, command_timeout=30) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            start = time.monotonic()
            c.send(b"Subject: stalled\r\n\r\npartial")
            r = c.reply(timeout=TIMER_GUARD)
            self.assertEqual((r.code, r.enhanced), (421, "4.4.2"), r)
            self.assertGreaterEqual(time.monotonic() - start, 2 - TIMER_SLACK)
            self.assertTrue(c.wait_closed())
            time.sleep(0.3)
            self.assertEqual(srv.messages(), [])
            self.assertEqual(srv.spool_files(), [])

    def test_greet_pause_early_talker(self):
        with limited(greet_pause=2) as srv, Client(srv.port) as c:
            c.send(b"EHLO early.test\r\n")
            r = c.reply(timeout=TIMER_GUARD)
            self.assertEqual(r.code, 554, r)
            self.assertTrue(c.wait_closed())

    def test_greet_pause_patient_client(self):
        """The greeting waits greet_pause from the connection on."""
        with limited(greet_pause=2) as srv:
            start = time.monotonic()
            with Client(srv.port) as c:
                r = c.reply(timeout=TIMER_GUARD)
                self.assertEqual(r.code, 220, r)
                self.assertGreaterEqual(time.monotonic() - start,
                                        2 - TIMER_SLACK)
                c.ehlo()

    def test_huge_unterminated_line_does_not_grow_memory(self):
        """Megabytes without LF are skipped, not buffered; then 500."""
        with limited(command_line=1000, errors=100) as srv, srv.client() as c:
            chunk = b"A" * 65536
            try:
                for _ in range(64):
                    c.send(chunk)
            except OSError as e:
                self.fail("server stopped reading: %s" % e)
            c.send(b"\r\n")
            self.assertEqual(c.reply().code, 500)
            self.assertEqual(c.cmd("NOOP").code, 250)
            with open("/proc/%d/status" % srv.proc.pid) as f:
                rss = [l for l in f if l.startswith("VmHWM")]
            if rss:
                kb = int(rss[0].split()[1])
                self.assertLess(kb, 200 * 1024, rss[0])


if __name__ == "__main__":
    main()
