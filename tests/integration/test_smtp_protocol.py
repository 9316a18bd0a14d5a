"""The SMTP state machine over raw sockets: replies and enhanced codes for
every command and sequence error, pipelining, over-long lines, the DATA
terminator (bare LF, SMTP smuggling), BDAT, relay policy, SMTPUTF8, SIZE."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    HOSTNAME,
    PosternTestCase,
    Server,
    main,
    read_bytes,
    read_envelope,
    split_added_headers,
    store_plugin,
)

STORE = {"20-store": store_plugin(envelope=True)}
MESSAGE_SIZE = 1000000


def server(**config):
    # errors: these tests make many deliberate mistakes in one session
    cfg = {"limits": {"message_size": MESSAGE_SIZE, "errors": 100}}
    cfg.update(config)
    return Server(plugins=STORE, config=cfg)


class ProtocolTest(PosternTestCase):
    def assertReply(self, reply, code, enhanced=None):
        self.assertEqual(reply.code, code, reply)
        if enhanced:
            self.assertEqual(reply.enhanced, enhanced, reply)

    # --- greeting and simple commands ------------------------------------

    def test_greeting_and_ehlo(self):
        with server() as srv, srv.client(greet=False) as c:
            g = c.expect(220)
            self.assertTrue(g.lines[0].startswith(HOSTNAME), g)
            r = c.ehlo()
            self.assertTrue(r.lines[0].startswith(HOSTNAME), r)
            exts = {line.split(" ", 1)[0].upper(): line for line in r.lines[1:]}
            for ext in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES",
                        "SMTPUTF8", "CHUNKING"):
                self.assertIn(ext, exts, r)
            self.assertEqual(exts["SIZE"].split(), ["SIZE", str(MESSAGE_SIZE)])
            self.assertNotIn("STARTTLS", exts, "STARTTLS without TLS config")
            c.cmd_expect("QUIT", 221)
            self.assertTrue(c.wait_closed())

    def test_helo(self):
        with server() as srv, srv.client() as c:
            r = c.cmd_expect("HELO client.test", 250)
            self.assertEqual(len(r.lines), 1, "HELO reply must be one line")
            # a transaction works after HELO
            r = c.transaction("a@example.org", ["b@example.com"], b"x\r\n")
            self.assertEqual(r.code, 250, r)

    def test_noop_vrfy_help_rset_quit(self):
        with server() as srv, srv.client() as c:
            self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
            self.assertReply(c.cmd("noop with argument"), 250)
            c.ehlo()
            r = c.cmd("VRFY someone@example.com")
            self.assertReply(r, 252)
            self.assertTrue(r.enhanced and r.enhanced.startswith("2."), r)
            r = c.cmd("HELP")
            self.assertReply(r, 214)
            self.assertReply(c.cmd("RSET"), 250, "2.0.0")
            r = c.cmd("QUIT")
            self.assertReply(r, 221, "2.0.0")
            self.assertTrue(c.wait_closed(), "connection not closed after QUIT")

    def test_commands_are_case_insensitive(self):
        with server() as srv, srv.client() as c:
            c.cmd_expect("ehlo client.test", 250)
            c.cmd_expect("mail from:<a@example.org>", 250)
            c.cmd_expect("rcpt to:<b@example.com>", 250)
            c.cmd_expect("rset", 250)

    # --- sequence errors ---------------------------------------------------

    def test_mail_before_helo(self):
        with server() as srv, srv.client() as c:
            self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 503, "5.5.1")
            # recoverable: EHLO then MAIL works
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)

    def test_rcpt_before_mail(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            self.assertReply(c.cmd("RCPT TO:<b@example.com>"), 503, "5.5.1")

    def test_data_before_rcpt(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            self.assertReply(c.cmd("DATA"), 503, "5.5.1")
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            # RFC 5321 3.3: with MAIL but no accepted RCPT, either 503 (bad
            # sequence) or 554 (no valid recipients)
            r = c.cmd("DATA")
            self.assertIn(r.code, (503, 554), r)
            self.assertEqual(r.enhanced, "5.5.1", r)
            # nested MAIL is a sequence error too
            self.assertReply(c.cmd("MAIL FROM:<a@example.org>"), 503, "5.5.1")
            # and the transaction is still usable
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(b"ok\r\n.\r\n")
            c.expect(250)

    def test_unknown_command(self):
        with server() as srv, srv.client() as c:
            self.assertReply(c.cmd("FROBNICATE now"), 500, "5.5.2")
            self.assertReply(c.cmd("MAILX FROM:<a@example.org>"), 500, "5.5.2")
            r = c.cmd("TURN")
            self.assertIn(r.code, (500, 502), r)
            self.assertTrue(r.enhanced and r.enhanced.startswith("5.5."), r)
            r = c.cmd("EXPN staff")
            self.assertIn(r.code, (252, 502, 550), r)
            # the session goes on
            self.assertReply(c.cmd("NOOP"), 250)

    def test_empty_line(self):
        with server() as srv, srv.client() as c:
            r = c.cmd("")
            self.assertIn(r.code, (500, 501), r)
            self.assertReply(c.cmd("NOOP"), 250)

    # --- syntax errors -----------------------------------------------------

    def test_syntax_errors_501(self):
        with server() as srv, srv.client() as c:
            self.assertReply(c.cmd("HELO"), 501)
            self.assertReply(c.cmd("EHLO"), 501)
            self.assertReply(c.cmd("EHLO bad..name"), 501)
            c.ehlo()
            for bad in ("MAIL", "MAIL FROM:", "MAIL FROM:a@example.org",
                        "MAIL FROM:<a@example.org", "MAIL TO:<a@example.org>",
                        "MAIL FROM:<a b@example.org>", "MAIL FROM:<@>"):
                r = c.cmd(bad)
                self.assertEqual(r.code, 501, "%s -> %r" % (bad, r))
                self.assertTrue(r.enhanced and r.enhanced.startswith("5."), r)
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            for bad in ("RCPT", "RCPT TO:", "RCPT TO:<>", "RCPT FROM:<b@example.com>",
                        "RCPT TO:<b@example.com"):
                r = c.cmd(bad)
                self.assertEqual(r.code, 501, "%s -> %r" % (bad, r))
            c.cmd_expect("RCPT TO:<b@example.com>", 250)

    def test_unknown_mail_param(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<a@example.org> FOO=BAR")
            self.assertReply(r, 555, "5.5.4")
            r = c.cmd("MAIL FROM:<a@example.org> BODY=9BIT")
            self.assertEqual(r.code // 100, 5, r)
            c.cmd_expect("MAIL FROM:<a@example.org> BODY=8BITMIME SIZE=100", 250)
            r = c.cmd("RCPT TO:<b@example.com> FOO=BAR")
            self.assertReply(r, 555, "5.5.4")

    def test_too_big_size_param(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<a@example.org> SIZE=%d" % (MESSAGE_SIZE + 1))
            self.assertReply(r, 552, "5.3.4")
            c.cmd_expect("MAIL FROM:<a@example.org> SIZE=%d" % MESSAGE_SIZE, 250)

    # --- pipelining --------------------------------------------------------

    def test_long_pipelined_burst_is_answered_in_full(self):
        """More replies than the output high-water mark: every command
        still gets its reply (the session must not stall waiting for the
        client, which is waiting for the replies)."""
        n = 5000
        with server() as srv, srv.client() as c:
            c.ehlo()
            c.send(b"NOOP\r\n" * n + b"QUIT\r\n")
            for i in range(n):
                self.assertEqual(c.reply().code, 250, "reply %d" % i)
            self.assertReply(c.reply(), 221)

    def test_long_burst_then_half_close(self):
        """The same burst, then the client shuts its sending side: the
        replies to everything it sent still arrive."""
        n = 5000
        with server() as srv, srv.client() as c:
            c.ehlo()
            c.send(b"NOOP\r\n" * n + b"QUIT\r\n")
            c.sock.shutdown(socket.SHUT_WR)
            for i in range(n):
                self.assertEqual(c.reply().code, 250, "reply %d" % i)
            self.assertReply(c.reply(), 221)

    def test_pipelined_group(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            c.send(b"MAIL FROM:<a@example.org>\r\n"
                   b"RCPT TO:<b@example.com>\r\n"
                   b"RCPT TO:<nobody@relay.example.net>\r\n"
                   b"RCPT TO:<c@example.com>\r\n"
                   b"DATA\r\n")
            self.assertReply(c.reply(), 250)
            self.assertReply(c.reply(), 250)
            self.assertReply(c.reply(), 550, "5.7.1")
            self.assertReply(c.reply(), 250)
            self.assertReply(c.reply(), 354)
            c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
            self.assertReply(c.reply(), 250)
            self.assertReply(c.reply(), 221)
            msgs = srv.wait_messages(1)
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["rcpt_to"], ["b@example.com", "c@example.com"])

    def test_whole_session_in_one_packet(self):
        with server() as srv, srv.client() as c:
            c.send(b"EHLO client.test\r\n"
                   b"MAIL FROM:<a@example.org>\r\n"
                   b"RCPT TO:<b@example.com>\r\n"
                   b"DATA\r\n"
                   b"Subject: one\r\n\r\nfirst\r\n.\r\n"
                   b"MAIL FROM:<c@example.org>\r\n"
                   b"RCPT TO:<d@example.com>\r\n"
                   b"DATA\r\n"
                   b"Subject: two\r\n\r\nsecond\r\n.\r\n"
                   b"QUIT\r\n")
            codes = [c.reply().code for _ in range(10)]
            self.assertEqual(codes, [250, 250, 250, 354, 250,
                                     250, 250, 354, 250, 221])
            self.assertTrue(c.wait_closed())
            msgs = srv.wait_messages(2)
            self.assertEqual(len(msgs), 2)
            bodies = sorted(read_bytes(p).split(b"\r\n\r\n", 1)[1] for p in msgs)
            self.assertEqual(bodies, [b"first\r\n", b"second\r\n"])

    def test_pipelined_after_data_terminator(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(b"Subject: 1\r\n\r\none\r\n.\r\nMAIL FROM:<c@example.org>\r\n")
            self.assertReply(c.reply(), 250)
            self.assertReply(c.reply(), 250)
            c.cmd_expect("RCPT TO:<d@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(b"Subject: 2\r\n\r\ntwo\r\n.\r\n")
            self.assertReply(c.reply(), 250)
            msgs = srv.wait_messages(2)
            self.assertEqual(len(msgs), 2)
            senders = sorted(read_envelope(srv.maildir, p)["mail_from"] for p in msgs)
            self.assertEqual(senders, ["a@example.org", "c@example.org"])

    def test_terminator_split_across_packets(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            body = b"Subject: split\r\n\r\nsplit body\r\n"
            for piece in (body, b"\r", b"\n.", b"\r", b"\n"):
                c.send(piece)
                time.sleep(0.05)
            # the terminator was the first CRLF . CRLF; the empty line before
            # it is part of the body
            self.assertReply(c.reply(), 250)
            msgs = srv.wait_messages(1)
            split_added_headers(read_bytes(msgs[0]), body + b"\r\n")

    # --- line length -------------------------------------------------------

    def test_overlong_command_line(self):
        with server(limits={"message_size": MESSAGE_SIZE, "errors": 100,
                            "command_line": 1000}) as srv, srv.client() as c:
            c.ehlo()
            r = c.cmd("NOOP " + "x" * 3000)
            self.assertReply(r, 500, "5.5.2")
            self.assertReply(c.cmd("NOOP"), 250)
            # a huge line (bigger than any read buffer) is skipped as well
            r = c.cmd("MAIL FROM:<" + "a" * 200000 + "@example.org>")
            self.assertReply(r, 500, "5.5.2")
            self.assertReply(c.cmd("NOOP"), 250)
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)

    def test_overlong_address(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<%s@example.org>" % ("a" * 65))
            self.assertIn(r.code, (501, 553), r)
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)

    # --- the DATA terminator and smuggling ---------------------------------

    def _start_data(self, c, sender="a@example.org"):
        c.cmd_expect("MAIL FROM:<%s>" % sender, 250)
        c.cmd_expect("RCPT TO:<b@example.com>", 250)
        c.cmd_expect("DATA", 354)

    def test_bare_lf_refused(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            self._start_data(c)
            c.send(b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
            r = c.reply()
            self.assertEqual(r.code // 100, 5, r)
            # the session survives, the message was not stored
            self.assertReply(c.cmd("NOOP"), 250)
            self.assertEqual(srv.messages(), [])
            self._start_data(c)
            c.send(b"Subject: bare cr\r\n\r\nline one\rline two\r\n.\r\n")
            r = c.reply()
            self.assertEqual(r.code // 100, 5, r)
            time.sleep(0.2)
            self.assertEqual(srv.messages(), [])
            self.assertEqual(srv.spool_files(), [])

    def test_bare_lf_normalised(self):
        with Server(plugins=STORE,
                    config={"line_endings": "normalise"}) as srv, srv.client() as c:
            c.ehlo()
            self._start_data(c)
            c.send(b"Subject: bare\r\n\r\nline one\nline two\r\n.\r\n")
            self.assertReply(c.reply(), 250)
            msgs = srv.wait_messages(1)
            split_added_headers(read_bytes(msgs[0]),
                                b"Subject: bare\r\n\r\nline one\r\nline two\r\n")

    def _smuggle(self, srv, c, fake_end):
        payload = (b"Subject: outer\r\n\r\nhello" + fake_end +
                   b"MAIL FROM:<evil@example.org>\r\n"
                   b"RCPT TO:<victim@example.com>\r\n"
                   b"DATA\r\n"
                   b"Subject: smuggled\r\n\r\nevil\r\n.\r\n")
        c.send(payload)
        first = c.reply()
        # nothing else was executed: the next reply answers our NOOP
        r = c.cmd("NOOP")
        self.assertReply(r, 250)
        self.assertEqual(r.enhanced, "2.0.0", r)
        return first

    def test_smuggling_strict(self):
        for fake_end in (b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n",
                         b"\r\n.\r"):
            with self.subTest(fake_end=fake_end):
                with server() as srv, srv.client() as c:
                    c.ehlo()
                    self._start_data(c)
                    first = self._smuggle(srv, c, fake_end)
                    self.assertEqual(first.code // 100, 5, first)
                    time.sleep(0.2)
                    self.assertEqual(srv.messages(), [])
                    self.assertNotIn("evil@example.org", srv.log_text())

    def test_smuggling_normalise(self):
        """Normalising bare LF must still not end the data early."""
        for fake_end in (b"\n.\n", b"\r\n.\n", b"\n.\r\n"):
            with self.subTest(fake_end=fake_end):
                with Server(plugins=STORE,
                            config={"line_endings": "normalise"}) as srv, \
                        srv.client() as c:
                    c.ehlo()
                    self._start_data(c)
                    first = self._smuggle(srv, c, fake_end)
                    self.assertEqual(first.code, 250, first)
                    msgs = srv.wait_messages(1)
                    time.sleep(0.2)
                    self.assertEqual(len(srv.messages()), 1)
                    env = read_envelope(srv.maildir, msgs[0])
                    self.assertEqual(env["mail_from"], "a@example.org")
                    self.assertIn(b"Subject: smuggled", read_bytes(msgs[0]))

    # --- BDAT (RFC 3030) ---------------------------------------------------

    def test_bdat_chunks(self):
        chunk1 = b"Subject: chunked\r\n\r\n.leading dot kept\r\n"
        chunk2 = b"inner terminator\r\n.\r\nstill data\r\n"
        with server() as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.send(b"BDAT %d\r\n" % len(chunk1) + chunk1)
            self.assertReply(c.reply(), 250)
            c.send(b"BDAT %d LAST\r\n" % len(chunk2) + chunk2)
            self.assertReply(c.reply(), 250)
            self.assertReply(c.cmd("NOOP"), 250)
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            split_added_headers(read_bytes(msgs[0]), chunk1 + chunk2)

    def test_bdat_zero_last(self):
        chunk = b"Subject: zero last\r\n\r\nbody\r\n"
        with server() as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            # pipelined: chunk, then BDAT 0 LAST, then QUIT in one send
            c.send(b"BDAT %d\r\n" % len(chunk) + chunk +
                   b"BDAT 0 LAST\r\nQUIT\r\n")
            self.assertReply(c.reply(), 250)
            self.assertReply(c.reply(), 250)
            self.assertReply(c.reply(), 221)
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            split_added_headers(read_bytes(msgs[0]), chunk)

    def test_bdat_sequence_errors(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            # the 10 bytes that follow must be read and thrown away, not
            # executed (a QUIT in them would close the session); RFC 3030
            # leaves the code to the server (503 typical)
            c.send(b"BDAT 10 LAST\r\nQUIT\r\nQUIT")
            r = c.reply()
            self.assertEqual(r.code // 100, 5, r)
            self.assertReply(c.cmd("NOOP"), 250)
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            # DATA after BDAT in one transaction is an error
            c.send(b"BDAT 3\r\nabc")
            self.assertReply(c.reply(), 250)
            self.assertReply(c.cmd("DATA"), 503)
            # A BDAT without a usable size cannot be skipped: its bytes
            # would run as commands, so the session ends.
            self.assertReply(c.cmd("BDAT abc"), 501)
            self.assertReply(c.reply(), 421)
            self.assertTrue(c.wait_closed())

    # --- relay and addresses -----------------------------------------------

    def test_relay_denied(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            self.assertReply(c.cmd("RCPT TO:<x@example.net>"), 550, "5.7.1")
            self.assertReply(c.cmd("RCPT TO:<x@sub.example.com>"), 550, "5.7.1")
            # an address literal is local only when it is the address the
            # client connected to
            self.assertReply(c.cmd("RCPT TO:<postmaster@[127.0.0.1]>"), 250)
            self.assertReply(c.cmd("RCPT TO:<x@[127.0.0.2]>"), 550, "5.7.1")
            # local domains are case-insensitive
            self.assertReply(c.cmd("RCPT TO:<x@EXAMPLE.COM>"), 250)
            self.assertReply(c.cmd("RCPT TO:<x@localhost>"), 250)
            # postmaster without domain is always accepted (RFC 5321 4.5.1)
            self.assertReply(c.cmd("RCPT TO:<Postmaster>"), 250)

    def test_relay_networks(self):
        with Server(plugins=STORE,
                    config={"relay_networks": ["127.0.0.0/8"]}) as srv, \
                srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            self.assertReply(c.cmd("RCPT TO:<x@example.net>"), 250)

    def test_smtputf8(self):
        with server() as srv, srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<j\u00f6rg@example.org>")
            self.assertReply(r, 553, "5.6.7")
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<\u043f\u0440\u0438\u043c\u0435\u0440@example.com>")
            self.assertReply(r, 553, "5.6.7")
            c.cmd_expect("RSET", 250)
            c.cmd_expect("MAIL FROM:<j\u00f6rg@example.org> SMTPUTF8", 250)
            c.cmd_expect("RCPT TO:<\u043f\u0440\u0438\u043c\u0435\u0440@example.com>",
                         250)
            c.cmd_expect("DATA", 354)
            c.send("Subject: caf\u00e9\r\n\r\nutf8\r\n.\r\n")
            self.assertReply(c.reply(), 250)
            msgs = srv.wait_messages(1)
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["mail_from"], "j\u00f6rg@example.org")
            self.assertEqual(env["rcpt_to"],
                             ["\u043f\u0440\u0438\u043c\u0435\u0440@example.com"])


if __name__ == "__main__":
    main()
