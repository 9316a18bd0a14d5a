"""The milter module against a scripted milter (milter_server.py), with
store_file behind it:

- what the milter receives: the events in order, the macros of each stage,
  connect/HELO/MAIL/RCPT arguments, header fields with raw values (folding
  as LF, the space after the colon left out unless SMFIP_HDR_LEADSPC), the
  body bytes;
- every action, checked in what store_file stored: headers added, inserted,
  changed and deleted at the right positions, the body replaced byte for
  byte, recipients added and deleted, the sender changed, discard (250,
  nothing stored), quarantine (the quarantine folder), reject, tempfail and
  multi-line reply codes at each stage, 421 closing the session, accept
  ending the milter's part, skip, progress re-arming the timeout;
- two milters in order, the second seeing the first's changes;
- misbehaving milters (garbage, a stall past the timeout, a close in the
  middle of the body, nothing listening) cost their session the
  default_action (4xx, or accept), and the daemon keeps serving: the next
  session reconnects;
- a unix socket, and a client that leaves while the milter thinks.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    PosternTestCase,
    Server,
    main,
    maildir_messages,
    read_bytes,
    read_envelope,
    require_programs,
    store_plugin,
    wait_until,
)
import struct  # noqa: E402

from milter_server import (  # noqa: E402
    ACCEPT,
    CLOSE,
    CONTINUE,
    DISCARD,
    GARBAGE,
    PROGRESS,
    REJECT,
    SKIP,
    SMFIP_HDR_LEADSPC,
    SMFIP_NOEOH,
    SMFIP_NR_BODY,
    SMFIP_NR_HDR,
    TEMPFAIL,
    MilterServer,
    Stall,
    add_header,
    add_rcpt,
    change_from,
    change_header,
    delete_rcpt,
    insert_header,
    packet,
    quarantine,
    replace_body,
    replycode,
)

BODY = (b"Subject: milter test\r\n"
        b"X-A: one\r\n"
        b"X-A: two\r\n"
        b"X-Folded: first\r\n\tsecond\r\n"
        b"From: alice@example.org\r\n"
        b"\r\n"
        b"line one\r\n"
        b".leading dot\r\n"
        b"last line\r\n")
SENDER = "alice@example.org"
RCPT = "bob@example.com"


def milter_plugin(server, **config):
    cfg = {"socket": server.socket}
    cfg.update(config)
    return {"module": "milter", "config": cfg}


def split_message(data):
    """(list of (name, raw value) of the stored header section, body)."""
    head, body = data.split(b"\r\n\r\n", 1)
    fields = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        else:
            name, value = line.split(b":", 1)
            fields.append((name, value))
    return [(n.decode(), v.decode()) for n, v in fields], body


class MilterTest(PosternTestCase):
    def serve(self, milters, store=True, config=None, **store_extra):
        plugins = {}
        for i, m in enumerate(milters):
            if isinstance(m, tuple):
                m, extra = m
            else:
                extra = {}
            plugins["%d-milter" % (50 + i)] = milter_plugin(m, **extra)
        if store:
            plugins["90-store"] = store_plugin(**store_extra)
        return Server(plugins=plugins, config=config)

    def send(self, srv, body=BODY, rcpts=(RCPT,), sender=SENDER,
             params=""):
        """One message; the reply to its end of data."""
        with srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<%s>%s" % (sender, params), 250)
            for r in rcpts:
                c.cmd_expect("RCPT TO:<%s>" % r, 250)
            c.cmd_expect("DATA", 354)
            c.send(body.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            reply = c.reply()
            c.cmd("QUIT")
            return reply

    def stored(self, srv, n=1):
        msgs = srv.wait_messages(n)
        self.assertEqual(len(msgs), n, srv.log_tail())
        return msgs

    # --- what the milter receives -------------------------------------------

    def test_events_macros_and_content(self):
        with MilterServer() as m, self.serve([m]) as srv:
            r = self.send(srv, params=" SIZE=%d" % len(BODY))
            self.assertEqual(r.code, 250, r)
            self.stored(srv)
            conn = m.wait_connections(1)[0]
            self.assertTrue(conn.closed.wait(10))
            cmds = [c for c in conn.commands() if c != "D"]
            self.assertEqual(cmds[:6], ["O", "C", "H", "M", "R", "T"])
            self.assertEqual(cmds[6:6 + 6], ["L"] * 6)  # Received + 5
            self.assertEqual(cmds[12:], ["N", "B", "E", "Q"])
            version, actions, protocol = conn.optneg
            self.assertEqual(version, 6)
            self.assertEqual(actions, 0x1FF)
            self.assertFalse(protocol & 0x800)  # no rejected recipients
            # macros before each stage's command
            self.assertEqual(conn.commands()[1:3], ["D", "C"])
            cm = conn.macros("C")
            self.assertEqual(cm["j"], "mx.postern.test")
            self.assertEqual(cm["{daemon_name}"], "mx.postern.test")
            self.assertEqual(cm["{client_addr}"], "127.0.0.1")
            self.assertEqual(cm["_"], "unknown [127.0.0.1]")
            self.assertIn("v", cm)
            host, family, port, addr = conn.of("C")[0]
            self.assertEqual((host, family, addr), ("[127.0.0.1]", "4",
                                                    "127.0.0.1"))
            self.assertEqual(int(cm["{client_port}"]), port)
            self.assertEqual(conn.of("H"), [["client.test"]])
            self.assertEqual(conn.of("M"), [["<%s>" % SENDER,
                                            "SIZE=%d" % len(BODY)]])
            mm = conn.macros("M")
            self.assertRegex(mm["i"], r"^[0-9a-f]{16}$")
            self.assertEqual(mm["{mail_addr}"], SENDER)
            self.assertEqual(conn.of("R"), [["<%s>" % RCPT]])
            self.assertEqual(conn.macros("R")["{rcpt_addr}"], RCPT)
            self.assertEqual(conn.macros("E")["i"], mm["i"])
            headers = conn.headers
            self.assertEqual(headers[0][0], "Received")
            self.assertIn("\n\tby mx.postern.test (postern)", headers[0][1])
            self.assertEqual(headers[1:], [
                ("Subject", "milter test"), ("X-A", "one"), ("X-A", "two"),
                ("X-Folded", "first\n\tsecond"),
                ("From", "alice@example.org")])
            self.assertEqual(conn.body,
                             b"line one\r\n.leading dot\r\nlast line\r\n")

    def test_leading_space_and_unanswered_headers(self):
        with MilterServer(protocol=SMFIP_HDR_LEADSPC | SMFIP_NR_HDR
                          | SMFIP_NOEOH,
                          script={"E": [add_header("X-Spaced", "  two"),
                                        CONTINUE]}) as m, \
                self.serve([m]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            data = read_bytes(self.stored(srv)[0])
            conn = m.connections[0]
            self.assertIn(("Subject", " milter test"), conn.headers)
            self.assertNotIn("N", conn.commands())
            fields, _ = split_message(data)
            self.assertIn(("X-Spaced", "  two"), fields)

    def test_macro_lists_from_the_milter(self):
        # SMFIM_ENVFROM (2): the milter's list replaces the default
        with MilterServer(macro_lists={2: "{client_addr} j {rcpt_addr}"}) \
                as m, self.serve([m]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            self.assertEqual(m.connections[0].macros("M"),
                             {"{client_addr}": "127.0.0.1",
                              "j": "mx.postern.test"})

    def test_transactions_and_abort(self):
        with MilterServer() as m, self.serve([m]) as srv:
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<%s>" % SENDER, 250)
                c.cmd_expect("RCPT TO:<%s>" % RCPT, 250)
                c.cmd_expect("RSET", 250)
                self.assertEqual(c.transaction(SENDER, [RCPT], BODY).code,
                                 250)
                self.assertEqual(c.transaction(SENDER, [RCPT], BODY).code,
                                 250)
                c.cmd("QUIT")
            self.stored(srv, 2)
            conn = m.connections[0]
            self.assertTrue(conn.closed.wait(10))
            cmds = "".join(c for c in conn.commands() if c not in "DL")
            self.assertEqual(cmds, "OCHMRAMRTNBEMRTNBEQ")
            # each transaction its own queue id
            ids = [v["i"] for t, v in conn.of("D") if t == "M"]
            self.assertEqual(len(set(ids)), 3, ids)

    def test_events_caught_up(self):
        """Attached to the message hook only (or after a module that
        decided a hook for everyone), the milter still sees the whole
        conversation, in order, before the message."""
        with MilterServer({"R": [REJECT]}) as m:
            plugins = {"50-milter": dict(milter_plugin(m),
                                         hooks=["message"]),
                       "90-store": store_plugin()}
            with Server(plugins=plugins) as srv:
                r = self.send(srv, rcpts=(RCPT, "carol@example.com"))
                # a recipient refused in the catch-up refuses the data
                self.assertEqual(r.code, 550, r)
                self.assertEqual(srv.messages(), [])
            cmds = [c for c in m.connections[0].commands() if c != "D"]
            self.assertEqual(cmds[:5], ["O", "C", "H", "M", "R"])
        with MilterServer() as m:
            plugins = {"50-milter": dict(milter_plugin(m),
                                         hooks=["message"]),
                       "90-store": store_plugin()}
            with Server(plugins=plugins) as srv:
                self.assertEqual(self.send(srv, rcpts=(
                    RCPT, "carol@example.com")).code, 250)
                self.stored(srv)
            conn = m.connections[0]
            cmds = [c for c in conn.commands() if c not in "DL"]
            self.assertEqual(cmds, ["O", "C", "H", "M", "R", "R", "T", "N",
                                    "B", "E", "Q"])
            self.assertEqual(conn.of("R"), [["<%s>" % RCPT],
                                            ["<carol@example.com>"]])

    def test_tls_and_auth_macros(self):
        """After STARTTLS the milter hears HELO again with the TLS macros;
        after AUTH, MAIL comes with the authenticated user."""
        from test_auth import auth_plugin, hash_password, plain
        from test_tls import PKI, TlsServer, client_context, starttls

        require_programs("certtool")
        pki = PKI()
        try:
            users = os.path.join(pki.dir, "users")
            with open(users, "w") as f:
                f.write("carol:%s\n" % hash_password("sha512crypt", "secret"))
            with MilterServer() as m:
                plugins = {"10-auth": auth_plugin(users),
                           "50-milter": milter_plugin(m),
                           "90-store": store_plugin()}
                with TlsServer(pki, plugins=plugins) as srv:
                    with srv.client() as c:
                        c.ehlo()
                        starttls(c, client_context(pki))
                        c.ehlo()
                        c.cmd_expect("AUTH PLAIN " + plain("carol", "secret"),
                                     235)
                        self.assertEqual(c.transaction(SENDER, [RCPT],
                                                       BODY).code, 250)
                        c.cmd("QUIT")
                    self.stored(srv)
                conn = m.connections[0]
                self.assertEqual(len(conn.of("H")), 2)
                # no macro had a value at the first EHLO: none was sent
                helo_macros = [v for t, v in conn.of("D") if t == "H"]
                self.assertEqual(len(helo_macros), 1)
                self.assertRegex(helo_macros[-1]["{tls_version}"], r"TLS")
                self.assertTrue(helo_macros[-1]["{cipher}"])
                mm = conn.macros("M")
                self.assertEqual(mm["{auth_authen}"], "carol")
                # the mechanism is not kept after the exchange
                self.assertNotIn("{auth_type}", mm)
        finally:
            pki.cleanup()

    # --- changes ------------------------------------------------------------

    def test_header_changes(self):
        script = {"E": [add_header("X-Added", "at the end"),
                        insert_header(0, "X-Top", "first of all"),
                        change_header(2, "X-A", "changed"),
                        change_header(1, "Subject", ""),
                        change_header(1, "X-Folded", "new\n\tfolded"),
                        CONTINUE]}
        with MilterServer(script) as m, self.serve([m]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            data = read_bytes(self.stored(srv)[0])
            fields, body = split_message(data)
            names = [n for n, _ in fields]
            self.assertEqual(names, ["X-Top", "Received", "X-A", "X-A",
                                     "X-Folded", "From", "X-Added"], data)
            self.assertEqual(fields[0][1], " first of all")
            self.assertEqual(fields[2][1], " one")
            self.assertEqual(fields[3][1], " changed")
            self.assertEqual(fields[4][1], " new\r\n\tfolded")
            self.assertEqual(fields[6][1], " at the end")
            self.assertEqual(body, b"line one\r\n.leading dot\r\nlast line\r\n")

    def test_body_replaced(self):
        new = b"new body\nwith a bare LF\r\n" + b"x" * 70000 + b"\r\nend"
        script = {"E": [replace_body(new[:30000]), replace_body(new[30000:]),
                        CONTINUE]}
        with MilterServer(script) as m, self.serve([m]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            data = read_bytes(self.stored(srv)[0])
            _, body = split_message(data)
            self.assertEqual(body, b"new body\r\nwith a bare LF\r\n"
                             + b"x" * 70000 + b"\r\nend\r\n")

    def test_envelope_changes(self):
        script = {"E": [add_rcpt("<carol@example.com>"),
                        add_rcpt("<dave@example.com>", "NOTIFY=NEVER"),
                        delete_rcpt("<%s>" % RCPT),
                        change_from("<bounce@example.org>"),
                        CONTINUE]}
        with MilterServer(script) as m, self.serve([m]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            path = self.stored(srv)[0]
            env = read_envelope(srv.maildir, path)
            self.assertEqual(env["mail_from"], "bounce@example.org")
            self.assertEqual(env["rcpt_to"], ["carol@example.com",
                                              "dave@example.com"])

    def test_discard(self):
        with MilterServer({"E": [DISCARD]}) as m, self.serve([m]) as srv:
            r = self.send(srv)
            self.assertEqual(r.code, 250, r)
            self.assertTrue(srv.wait_log(r"discard"), srv.log_tail())
            self.assertEqual(srv.messages(), [])
        # at RCPT: the recipient is accepted, the message dropped
        with MilterServer({"R": [DISCARD]}) as m, self.serve([m]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            self.assertTrue(srv.wait_log(r"discard"), srv.log_tail())
            self.assertEqual(srv.messages(), [])
            self.assertNotIn("E", m.connections[0].commands())

    def test_quarantine(self):
        with MilterServer({"E": [quarantine("looks like a virus"),
                                 CONTINUE]}) as m, \
                self.serve([m]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            qdir = os.path.join(srv.maildir, ".Quarantine")
            msgs = wait_until(lambda: maildir_messages(qdir), 5)
            self.assertEqual(len(msgs), 1, srv.log_tail())
            self.assertEqual(srv.messages(), [])
            self.assertTrue(read_bytes(msgs[0]).endswith(b"last line\r\n"))

    # --- decisions at each stage --------------------------------------------

    def session_reply(self, srv):
        """Run a session as far as it goes: the first non-2xx/3xx reply
        with the command it answered, or None when all went through."""
        c = srv.client(greet=False)
        with c:
            g = c.reply()
            if g.code != 220:
                return "connect", g
            steps = [("helo", "EHLO client.test"),
                     ("mail", "MAIL FROM:<%s>" % SENDER),
                     ("rcpt", "RCPT TO:<%s>" % RCPT), ("data", "DATA")]
            for name, line in steps:
                r = c.cmd(line)
                if r.code >= 400:
                    return name, r
            c.send(BODY + b".\r\n")
            r = c.reply()
            c.cmd("QUIT")
            return ("message", r) if r.code >= 400 else None

    def test_reject_and_tempfail_at_each_stage(self):
        stages = {"C": "connect", "H": "helo", "M": "mail", "R": "rcpt",
                  "T": "data", "L": "message", "B": "message",
                  "E": "message"}
        for cmd, stage in stages.items():
            for answer, klass in ((REJECT, 5), (TEMPFAIL, 4)):
                with self.subTest(cmd=cmd, klass=klass), \
                        MilterServer({cmd: [answer]}) as m, \
                        self.serve([m]) as srv:
                    got = self.session_reply(srv)
                    self.assertIsNotNone(got, "%s: nothing refused" % cmd)
                    self.assertEqual(got[0], stage)
                    self.assertEqual(got[1].code // 100, klass, got)
                    self.assertEqual(srv.messages(), [])

    def test_replycode_multiline(self):
        text = "550-5.7.1 first line\r\n550-5.7.1 100%% sure\r\n" \
               "550 5.7.1 last line"
        with MilterServer({"R": [replycode(text)]}) as m, \
                self.serve([m]) as srv:
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<%s>" % SENDER, 250)
                r = c.cmd("RCPT TO:<%s>" % RCPT)
                self.assertEqual(r.code, 550)
                self.assertEqual(r.lines, ["5.7.1 first line",
                                           "5.7.1 100% sure",
                                           "5.7.1 last line"])
        with MilterServer({"E": [replycode("451 4.7.1 greylisted")]}) as m, \
                self.serve([m]) as srv:
            r = self.send_expecting(srv)
            self.assertEqual((r.code, r.lines), (451, ["4.7.1 greylisted"]))
            self.assertEqual(srv.messages(), [])

    def send_expecting(self, srv):
        with srv.client() as c:
            c.ehlo()
            return c.transaction(SENDER, [RCPT], BODY)

    def test_replycode_421_closes(self):
        with MilterServer({"M": [replycode("421 4.7.0 closing now")]}) as m, \
                self.serve([m]) as srv:
            with srv.client() as c:
                c.ehlo()
                r = c.cmd("MAIL FROM:<%s>" % SENDER)
                self.assertEqual((r.code, r.lines), (421,
                                                     ["4.7.0 closing now"]))
                self.assertTrue(c.wait_closed())

    def test_accept_ends_the_milters_part(self):
        with MilterServer({"M": [ACCEPT]}) as m, self.serve([m]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            self.stored(srv)
            cmds = m.connections[0].commands()
            self.assertNotIn("R", cmds)
            self.assertNotIn("E", cmds)
        with MilterServer({"C": [ACCEPT]}) as m, self.serve([m]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            self.stored(srv)
            self.assertNotIn("H", m.connections[0].commands())

    def test_skip_and_progress(self):
        body = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 200
        script = {"B": [SKIP],
                  "E": [PROGRESS, Stall(1.2), PROGRESS, Stall(1.2),
                        CONTINUE]}
        with MilterServer(script) as m, \
                self.serve([(m, {"timeouts": {"content": 2}})]) as srv:
            t0 = time.monotonic()
            self.assertEqual(self.send(srv, body=body).code, 250)
            self.assertGreaterEqual(time.monotonic() - t0, 2.4)
            self.stored(srv)
            cmds = m.connections[0].commands()
            self.assertEqual(cmds.count("B"), 1)  # skipped after the first
            self.assertIn("E", cmds)

    def test_unanswered_body_chunks(self):
        body = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 300
        with MilterServer(protocol=SMFIP_NR_BODY) as m, \
                self.serve([m]) as srv:
            self.assertEqual(self.send(srv, body=body).code, 250)
            self.stored(srv)
            self.assertEqual(m.connections[0].body, body.split(b"\r\n\r\n",
                                                               1)[1])
            self.assertGreaterEqual(m.connections[0].commands().count("B"), 5)

    # --- two milters ----------------------------------------------------------

    def test_two_milters_in_order(self):
        with MilterServer({"E": [add_header("X-First", "1"), CONTINUE]}) as a, \
                MilterServer({"E": [add_header("X-Second", "2"),
                                    CONTINUE]}) as b, \
                self.serve([a, b]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            fields, _ = split_message(read_bytes(self.stored(srv)[0]))
            names = [n for n, _ in fields]
            self.assertEqual(names[-2:], ["X-First", "X-Second"])
            self.assertIn(("X-First", "1"), b.connections[0].headers)
            self.assertNotIn("X-Second", [n for n, _ in a.connections[0]
                                          .headers])
        with MilterServer({"R": [REJECT]}) as a, MilterServer() as b, \
                self.serve([a, b]) as srv:
            got = self.session_reply(srv)
            self.assertEqual(got[0], "rcpt")
            self.assertNotIn("R", b.connections[0].commands())

    # --- misbehaving milters --------------------------------------------------

    def assertFailureLogged(self, srv, reason):
        self.assertTrue(srv.wait_log(r'event=failure reason="[^"]*%s'
                                     % reason), srv.log_tail())

    def test_garbage(self):
        with MilterServer({"M": [GARBAGE]}) as m, self.serve([m]) as srv:
            got = self.session_reply(srv)
            self.assertEqual((got[0], got[1].code), ("mail", 451))
            self.assertFailureLogged(srv, "garbage")
            # the next session reconnects; this milter answers MAIL with
            # garbage every time
            self.assertEqual(self.session_reply(srv)[0], "mail")
            self.assertEqual(len(m.connections), 2)

    def test_stall_past_the_timeout(self):
        with MilterServer({"R": [Stall(5), CONTINUE]}) as m, \
                self.serve([(m, {"timeouts": {"command": 1}})]) as srv:
            t0 = time.monotonic()
            got = self.session_reply(srv)
            self.assertEqual((got[0], got[1].code), ("rcpt", 451))
            self.assertGreaterEqual(time.monotonic() - t0, 1.0)
            self.assertFailureLogged(srv, "timed out")

    def test_close_mid_body_then_next_session(self):
        sessions = []

        def on_body(conn, chunk):
            sessions.append(conn)
            return [CLOSE] if len(sessions) == 1 else [CONTINUE]

        with MilterServer({"B": on_body}) as m, self.serve([m]) as srv:
            got = self.session_reply(srv)
            self.assertEqual((got[0], got[1].code), ("message", 451))
            self.assertFailureLogged(srv, "closed")
            self.assertEqual(srv.messages(), [])
            self.assertEqual(self.send(srv).code, 250)
            self.stored(srv)

    def test_not_listening(self):
        with MilterServer() as gone:
            socket_name = gone.socket
        dead = type("Dead", (), {"socket": socket_name})()
        with self.serve([dead]) as srv:
            got = self.session_reply(srv)
            self.assertEqual(got[0], "connect")
            self.assertEqual(got[1].code // 100, 4)
            self.assertFailureLogged(srv, "refused")
        with self.serve([(dead, {"default_action": "accept"})]) as srv:
            self.assertEqual(self.send(srv).code, 250)
            self.stored(srv)
        with self.serve([(dead, {"default_action": "reject"})]) as srv:
            got = self.session_reply(srv)
            self.assertEqual((got[0], got[1].code // 100), ("connect", 5))

    def test_bad_negotiation_and_unknown_replies(self):
        cases = [
            # version 1, then a version from the future
            ({}, dict(optneg_reply=[packet("O", struct.pack(">III", 1, 0,
                                                            0))]),
             "connect", "version"),
            ({}, dict(optneg_reply=[packet("O", struct.pack(">III", 6,
                                                            0x400, 0))]),
             "connect", "actions"),
            ({"M": [packet("Z")]}, {}, "mail", "unknown reply"),
            ({"M": [packet("c", b"x")]}, {}, "mail", "data after"),
            ({"R": [struct.pack(">I", 1 << 20) + b"c"]}, {}, "rcpt",
             "bad packet length"),
            # a change before the end of the message
            ({"R": [add_header("X", "y")]}, {}, "rcpt", "before the end"),
            # a change it did not negotiate
            ({"E": [add_rcpt("<x@example.com>"), CONTINUE]},
             dict(actions=0x1), "message", "not negotiated"),
            ({"E": [replycode("250 ok")]}, {}, "message", "4xx or 5xx"),
        ]
        for script, kw, stage, reason in cases:
            with self.subTest(reason=reason), \
                    MilterServer(script, **kw) as m, self.serve([m]) as srv:
                got = self.session_reply(srv)
                self.assertIsNotNone(got)
                self.assertEqual((got[0], got[1].code // 100), (stage, 4))
                self.assertFailureLogged(srv, reason)
                self.assertEqual(srv.messages(), [])

    def test_a_stalled_milter_stalls_only_its_session(self):
        first = []

        def eom(conn, _):
            first.append(conn)
            return [Stall(4), CONTINUE] if len(first) == 1 else [CONTINUE]

        with MilterServer({"E": eom}) as m, self.serve([m]) as srv:
            slow = srv.client()
            slow.ehlo()
            slow.cmd_expect("MAIL FROM:<%s>" % SENDER, 250)
            slow.cmd_expect("RCPT TO:<%s>" % RCPT, 250)
            slow.cmd_expect("DATA", 354)
            slow.send(BODY + b".\r\n")
            self.assertTrue(wait_until(lambda: first, 10))
            # while the first waits on its milter, another session goes
            # through from start to end
            self.assertEqual(self.send(srv).code, 250)
            self.assertEqual(len(self.stored(srv)), 1)
            self.assertEqual(slow.reply().code, 250)
            slow.close()
            self.stored(srv, 2)

    def test_stop_while_waiting_on_the_milter(self):
        with MilterServer({"E": [Stall(20), CONTINUE]}) as m, \
                self.serve([m]) as srv:
            c = srv.client()
            c.ehlo()
            self.assertEqual(c.cmd("MAIL FROM:<%s>" % SENDER).code, 250)
            c.cmd_expect("RCPT TO:<%s>" % RCPT, 250)
            c.cmd_expect("DATA", 354)
            c.send(BODY + b".\r\n")
            self.assertTrue(m.wait_command(m.connections[0], "E"))
            # a first SIGTERM drains (the session waits on its milter), a
            # second stops now: postern must exit clean, the hook let go
            srv.proc.send_signal(signal.SIGTERM)
            self.assertTrue(srv.wait_log(r" draining "))
            srv.proc.send_signal(signal.SIGTERM)
            srv.proc.wait(10)
            problems = srv.stop()
            self.assertEqual(problems, [])
            self.assertEqual(srv.proc.returncode, 0)
            self.assertTrue(srv.wait_log(r"disconnect reason=shutdown"))
            c.close()

    def test_unix_socket_and_client_leaving(self):
        path = os.path.join("/tmp", "postern-milter-%d.sock" % os.getpid())
        with MilterServer({"E": [Stall(3), CONTINUE]},
                          unix_path=path) as m, self.serve([m]) as srv:
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<%s>" % SENDER, 250)
            c.cmd_expect("RCPT TO:<%s>" % RCPT, 250)
            c.cmd_expect("DATA", 354)
            c.send(BODY + b".\r\n")
            self.assertTrue(m.wait_command(m.connections[0], "E"))
            c.abort()
            self.assertTrue(m.connections[0].closed.wait(10))
            # the daemon goes on
            m.script = {}
            self.assertEqual(self.send(srv).code, 250)
            self.stored(srv)
            self.assertEqual(len(m.connections), 2)


if __name__ == "__main__":
    main()
