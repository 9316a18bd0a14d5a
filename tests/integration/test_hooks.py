"""Hook dispatch with real modules: asynchronous handlers (test_async) at
every hook with every result, custom replies, orphaned contexts, handler
order by plugins.d file name, the "hooks" subset, notes and header_add
(test_notes), the reject test module and the bundled rcpt_list."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    Client,
    PosternTestCase,
    Server,
    async_plugin,
    main,
    read_bytes,
    read_envelope,
    split_added_headers,
    store_plugin,
)

STORE = ("90-store", store_plugin(envelope=True))
STAGE_HOOKS = ("connect", "helo", "mail", "rcpt", "data", "message", "store")
# Hooks whose result is ignored; a handler may still go async there.
NOTIFY_HOOKS = ("reset", "disconnect")
BODY = b"Subject: hooks\r\n\r\nhook body\r\n"
# How long a hook stays pending in the orphan tests: the client must be
# gone before it resumes, however slowly this process gets to abort().
ORPHAN_DELAY = 2.0


def with_async(hooks, *more):
    return [("10-async", async_plugin(hooks))] + list(more) + [STORE]


class AsyncHookTest(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_async")

    def test_async_every_hook_continue(self):
        hooks = {h: {"delay": 0.1, "result": "continue"} for h in STAGE_HOOKS}
        with Server(plugins=with_async(hooks)) as srv:
            with srv.client() as c:
                c.ehlo()
                r = c.transaction("a@example.org", ["b@example.com"], BODY)
                self.assertEqual(r.code, 250, r)
                c.cmd_expect("QUIT", 221)
                c.wait_closed()
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            split_added_headers(read_bytes(msgs[0]), BODY)
            for h in STAGE_HOOKS:
                self.assertTrue(srv.wait_log(r"test_async resumed hook=%s\b" % h),
                                "no async resume logged for hook " + h)
            self.assertEqual(srv.count_log(r"test_async orphaned"), 0)

    def test_async_reset_and_disconnect(self):
        """PENDING at reset and disconnect: the context must stay valid
        until postern_resume() (hook.h), even though the result is
        ignored and the client is gone."""
        hooks = {h: {"delay": 0.2, "result": "continue"} for h in NOTIFY_HOOKS}
        with Server(plugins=with_async(hooks)) as srv:
            with srv.client() as c:
                c.ehlo()
                r = c.transaction("a@example.org", ["b@example.com"], BODY)
                self.assertEqual(r.code, 250, r)
                c.cmd_expect("RSET", 250)
                c.cmd_expect("QUIT", 221)
                c.wait_closed()
            for h in NOTIFY_HOOKS:
                self.assertTrue(srv.wait_log(r"test_async resumed hook=%s\b" % h),
                                "no async resume logged for hook " + h)
            self.assertTrue(srv.alive)
            with srv.client() as c2:
                self.assertEqual(c2.cmd("NOOP").code, 250)

    def test_async_rcpt_results(self):
        hooks = {"rcpt": {"delay": 0.2, "result": "reject", "match": "rej",
                          "code": 550, "enhanced": "5.7.1",
                          "text": "async says no"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<rej@example.com>")
            self.assertEqual((r.code, r.enhanced), (550, "5.7.1"), r)
            self.assertIn("async says no", r.text)
            r = c.cmd("RCPT TO:<ok@example.com>")
            self.assertEqual(r.code, 250, r)
            c.cmd_expect("DATA", 354)
            c.send(BODY + b".\r\n")
            self.assertEqual(c.reply().code, 250)
            msgs = srv.wait_messages(1)
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["rcpt_to"], ["ok@example.com"])

    def test_async_rcpt_accept_custom(self):
        hooks = {"rcpt": {"delay": 0.2, "result": "accept", "code": 250,
                          "enhanced": "2.1.5", "text": "async welcome"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<b@example.com>")
            self.assertEqual((r.code, r.enhanced), (250, "2.1.5"), r)
            self.assertIn("async welcome", r.text)
            # a module's ACCEPT stops the chain before the relay policy
            r = c.cmd("RCPT TO:<b@example.net>")
            self.assertEqual(r.code, 250, r)
            c.cmd_expect("DATA", 354)
            c.send(BODY + b".\r\n")
            self.assertEqual(c.reply().code, 250)
            msgs = srv.wait_messages(1)
            split_added_headers(read_bytes(msgs[0]), BODY)

    def test_async_rcpt_tempfail(self):
        hooks = {"rcpt": {"delay": 0.2, "result": "tempfail", "code": 451,
                          "enhanced": "4.7.1", "text": "async later"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<b@example.com>")
            self.assertEqual((r.code, r.enhanced), (451, "4.7.1"), r)
            self.assertIn("async later", r.text)
            # no recipient: 503 or 554 (RFC 5321 3.3)
            self.assertIn(c.cmd("DATA").code, (503, 554))

    def test_async_default_replies(self):
        """Without a code the core picks the stage default of the class."""
        hooks = {"mail": {"delay": 0.1, "result": "tempfail", "match": "temp"},
                 "rcpt": {"delay": 0.1, "result": "reject"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<temp@example.org>")
            self.assertEqual(r.code // 100, 4, r)
            self.assertTrue(r.enhanced and r.enhanced.startswith("4."), r)
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<b@example.com>")
            self.assertEqual(r.code // 100, 5, r)
            self.assertTrue(r.enhanced and r.enhanced.startswith("5."), r)

    def test_async_pipelined_rcpts_keep_order(self):
        hooks = {"rcpt": {"delay": 0.2, "result": "reject", "match": "rej",
                          "code": 550, "text": "nope"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            c.ehlo()
            c.send(b"MAIL FROM:<a@example.org>\r\n"
                   b"RCPT TO:<one@example.com>\r\n"
                   b"RCPT TO:<rej@example.com>\r\n"
                   b"RCPT TO:<three@example.com>\r\n"
                   b"DATA\r\n")
            codes = [c.reply().code for _ in range(5)]
            self.assertEqual(codes, [250, 250, 550, 250, 354])
            c.send(BODY + b".\r\n")
            self.assertEqual(c.reply().code, 250)
            msgs = srv.wait_messages(1)
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["rcpt_to"], ["one@example.com",
                                              "three@example.com"])

    def test_async_store_accept_stops_chain(self):
        hooks = {"store": {"delay": 0.2, "result": "accept", "code": 250,
                           "text": "taken by async"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            c.ehlo()
            r = c.transaction("a@example.org", ["b@example.com"], BODY)
            self.assertEqual(r.code, 250, r)
            self.assertIn("taken by async", r.text)
            time.sleep(0.3)
            self.assertEqual(srv.messages(), [])
            self.assertEqual(srv.spool_files(), [])

    def test_async_store_tempfail(self):
        hooks = {"store": {"delay": 0.2, "result": "tempfail", "code": 452,
                           "enhanced": "4.3.1", "text": "disk busy"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            c.ehlo()
            r = c.transaction("a@example.org", ["b@example.com"], BODY)
            self.assertEqual((r.code, r.enhanced), (452, "4.3.1"), r)
            time.sleep(0.3)
            self.assertEqual(srv.messages(), [])
            self.assertEqual(srv.spool_files(), [])

    def test_async_message_reject(self):
        hooks = {"message": {"delay": 0.2, "result": "reject", "code": 554,
                             "enhanced": "5.7.0", "text": "content refused"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            c.ehlo()
            r = c.transaction("a@example.org", ["b@example.com"], BODY)
            self.assertEqual((r.code, r.enhanced), (554, "5.7.0"), r)
            self.assertIn("content refused", r.text)
            time.sleep(0.3)
            self.assertEqual(srv.messages(), [])
            # the session continues
            self.assertEqual(c.cmd("NOOP").code, 250)

    def test_async_data_tempfail(self):
        hooks = {"data": {"delay": 0.2, "result": "tempfail", "code": 451,
                          "text": "not now"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            r = c.cmd("DATA")
            self.assertEqual(r.code, 451, r)
            self.assertEqual(c.cmd("NOOP").code, 250)

    def test_async_connect_reject(self):
        hooks = {"connect": {"delay": 0.2, "result": "reject", "code": 554,
                             "enhanced": "5.7.1", "text": "go away"}}
        with Server(plugins=with_async(hooks)) as srv, Client(srv.port) as c:
            r = c.reply()
            self.assertEqual(r.code, 554, r)
            self.assertIn("go away", r.text)
            # RFC 5321 3.1: after a 554 greeting the server waits for QUIT
            # (or closes); any other command gets 503 or no answer
            try:
                r = c.cmd("EHLO client.test")
                self.assertNotEqual(r.code, 250, r)
            except (OSError, AssertionError):
                pass

    def test_async_helo_reject(self):
        hooks = {"helo": {"delay": 0.1, "result": "reject", "code": 550,
                          "text": "bad helo"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            r = c.cmd("EHLO client.test")
            self.assertEqual(r.code, 550, r)
            self.assertEqual(c.cmd("MAIL FROM:<a@example.org>").code, 503)

    def test_async_disconnect(self):
        hooks = {"rcpt": {"delay": 0.2, "result": "disconnect",
                          "text": "bye now"}}
        with Server(plugins=with_async(hooks)) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<b@example.com>")
            self.assertEqual(r.code, 421, r)
            self.assertIn("bye now", r.text)
            self.assertTrue(c.wait_closed(), "not closed after DISCONNECT")
            with srv.client() as c2:
                self.assertEqual(c2.cmd("NOOP").code, 250)

    def test_orphaned_rcpt(self):
        hooks = {"rcpt": {"delay": ORPHAN_DELAY, "result": "accept"}}
        with Server(plugins=with_async(hooks)) as srv:
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.send(b"RCPT TO:<b@example.com>\r\n")
            self.assertTrue(srv.wait_log(r"test_async pending hook=rcpt", 5))
            c.abort()
            self.assertTrue(srv.wait_log(r"test_async orphaned",
                                         timeout=ORPHAN_DELAY + 10),
                            "orphaned context not reported")
            self.assertTrue(srv.alive)
            with srv.client() as c2:
                c2.ehlo()
                c2.cmd_expect("MAIL FROM:<a@example.org>", 250)
                r = c2.cmd("RCPT TO:<b@example.com>")
                self.assertEqual(r.code, 250, r)
                c2.cmd_expect("DATA", 354)
                c2.send(BODY + b".\r\n")
                self.assertEqual(c2.reply().code, 250)
            self.assertEqual(len(srv.wait_messages(1)), 1)

    def test_half_close_after_final_dot_gets_the_reply(self):
        """A client that shuts its sending side right after the final dot
        (no QUIT) still reads the store's 250: closing instead would make
        it retry a message that was stored, a duplicate."""
        hooks = {"store": {"delay": 0.5, "result": "continue"}}
        plugins = with_async(hooks)
        with Server(plugins=plugins) as srv:
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(BODY + b".\r\n")
            c.sock.shutdown(socket.SHUT_WR)
            r = c.reply()
            self.assertEqual(r.code, 250, r)
            self.assertTrue(c.wait_closed())
            self.assertEqual(len(srv.wait_messages(1)), 1)
            self.assertEqual(srv.count_log(r"test_async orphaned"), 0)

    def test_orphaned_every_stage(self):
        """Close while pending at connect, helo, mail, data, message and
        store: no crash, each is reported orphaned, nothing is half-stored."""
        stages = [
            ("connect", b""),
            ("helo", b"EHLO client.test\r\n"),
            ("mail", b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\n"),
            ("data", b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\n"
                     b"RCPT TO:<b@example.com>\r\nDATA\r\n"),
            ("message", b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\n"
                        b"RCPT TO:<b@example.com>\r\nDATA\r\n" + BODY +
                        b".\r\n"),
        ]
        for hook, script in stages:
            with self.subTest(hook=hook):
                hooks = {hook: {"delay": ORPHAN_DELAY, "result": "continue"}}
                with Server(plugins=with_async(hooks)) as srv:
                    c = Client(srv.port)
                    if script:
                        c.send(script)
                    self.assertTrue(
                        srv.wait_log(r"test_async pending hook=%s" % hook, 5))
                    c.abort()
                    self.assertTrue(srv.wait_log(r"test_async orphaned",
                                                 ORPHAN_DELAY + 10),
                                    "no orphan reported at " + hook)
                    self.assertTrue(srv.alive)
                    time.sleep(0.3)
                    self.assertEqual(srv.messages(), [])
                    self.assertEqual(srv.spool_files(), [])
                    with srv.client() as c2:
                        self.assertEqual(c2.cmd("NOOP").code, 250)

    def test_hooks_subset(self):
        """An instance attached to "mail" only never runs at rcpt."""
        plugin = async_plugin({
            "mail": {"delay": 0.1, "result": "continue"},
            "rcpt": {"delay": 0.1, "result": "reject", "code": 550,
                     "text": "should not run"}})
        plugin["hooks"] = ["mail"]
        with Server(plugins=[("10-async", plugin), STORE]) as srv, \
                srv.client() as c:
            c.ehlo()
            r = c.transaction("a@example.org", ["b@example.com"], BODY)
            self.assertEqual(r.code, 250, r)
            self.assertTrue(srv.wait_log(r"test_async resumed hook=mail"))
            self.assertEqual(srv.count_log(r"test_async resumed hook=rcpt"), 0)

    def test_two_instances_of_one_module(self):
        a = async_plugin({"rcpt": {"delay": 0.1, "result": "reject",
                                   "match": "first", "code": 550,
                                   "text": "instance one"}})
        b = async_plugin({"rcpt": {"delay": 0.1, "result": "reject",
                                   "match": "second", "code": 553,
                                   "text": "instance two"}})
        with Server(plugins=[("10-a", a), ("20-b", b), STORE]) as srv, \
                srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<first@example.com>")
            self.assertEqual(r.code, 550, r)
            self.assertIn("instance one", r.text)
            r = c.cmd("RCPT TO:<second@example.com>")
            self.assertEqual(r.code, 553, r)
            self.assertIn("instance two", r.text)
            self.assertEqual(c.cmd("RCPT TO:<third@example.com>").code, 250)


class RejectModuleTest(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_reject")

    def test_custom_code_and_text(self):
        plugin = {"module": "test_reject",
                  "config": {"code": 553, "text": "spam is not welcome here",
                             "match": "spam"}}
        with Server(plugins=[("10-reject", plugin), STORE]) as srv, \
                srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<spammer@example.org>")
            self.assertEqual(r.code, 553, r)
            self.assertIn("spam is not welcome here", r.text)
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<spam@example.com>")
            self.assertEqual(r.code, 553, r)
            self.assertIn("spam is not welcome here", r.text)
            c.cmd_expect("RCPT TO:<ham@example.com>", 250)

    def test_order_follows_file_names(self):
        def reject(code, text):
            return {"module": "test_reject", "hooks": ["rcpt"],
                    "config": {"code": code, "text": text, "match": "blocked"}}

        for first, second in ((550, 553), (553, 550)):
            with self.subTest(first=first):
                # "zz" sorts after "aa" by instance name, but the numeric
                # prefix decides: the lower file name runs first
                plugins = [("20-aa", reject(second, "second %d" % second)),
                           ("10-zz", reject(first, "first %d" % first)),
                           STORE]
                with Server(plugins=plugins) as srv, srv.client() as c:
                    c.ehlo()
                    c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                    r = c.cmd("RCPT TO:<blocked@example.com>")
                    self.assertEqual(r.code, first, r)
                    self.assertIn("first %d" % first, r.text)


class NotesTest(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_notes")

    def test_notes_header(self):
        plugins = [("10-notes", {"module": "test_notes"}), STORE]
        with Server(plugins=plugins) as srv, srv.client() as c:
            c.cmd_expect("EHLO notes.client.test", 250)
            r = c.transaction("alice@example.org",
                              ["b@example.com", "c@example.com"], BODY)
            self.assertEqual(r.code, 250, r)
            # a second transaction in the same session: the session note
            # survives, the transaction note is the new one
            r = c.transaction("", ["d@example.com"], BODY)
            self.assertEqual(r.code, 250, r)
            c.cmd_expect("QUIT", 221)
            msgs = srv.wait_messages(2)
            self.assertEqual(len(msgs), 2)
            found = set()
            for path in msgs:
                headers = split_added_headers(read_bytes(path), BODY)
                notes = [h for h in headers if h.startswith("X-Test-Notes:")]
                self.assertEqual(len(notes), 1, headers)
                found.add(notes[0])
                self.assertTrue(any(h.startswith("Received:") for h in headers))
            self.assertEqual(found, {
                "X-Test-Notes: helo=notes.client.test "
                "mail=alice@example.org rcpts=2",
                "X-Test-Notes: helo=notes.client.test mail= rcpts=1",
            })
            self.assertEqual(srv.count_log("test_notes stale"), 0)

    def test_transaction_note_freed_at_rset(self):
        plugins = [("10-notes", {"module": "test_notes"}), STORE]
        with Server(plugins=plugins) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<first@example.org>", 250)
            c.cmd_expect("RSET", 250)
            c.cmd_expect("MAIL FROM:<second@example.org>", 250)
            c.cmd_expect("RSET", 250)
            self.assertEqual(srv.count_log("test_notes stale"), 0)


class MailParamTest(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_params")

    def test_every_param_value_stays_its_own(self):
        # Issue 7, defect 9: values read one after the other in one call
        # all stay valid (they were one shared buffer: SIZE read as the
        # BODY value).
        plugins = [("10-params", {"module": "test_params"}), STORE]
        with Server(plugins=plugins) as srv, srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<a@example.org> SIZE=1234 BODY=8BITMIME "
                      "SMTPUTF8")
            self.assertEqual((r.code, r.enhanced), (550, "5.7.1"), r)
            self.assertEqual(r.text, "5.7.1 size=1234 body=8BITMIME "
                             "smtputf8= envid=(null)")
            r = c.cmd("MAIL FROM:<b@example.org> BODY=7BIT")
            self.assertEqual(r.text, "5.7.1 size=(null) body=7BIT "
                             "smtputf8=(null) envid=(null)")
            self.assertEqual(srv.count_log("test_params size copied"), 0)


class RcptListTest(PosternTestCase):
    def test_rcpt_list(self):
        plugin = {"module": "rcpt_list",
                  "config": {"addresses": ["alice@example.com",
                                           "@catchall.example.com",
                                           "bob@other.example"]}}
        with Server(plugins=[("10-rcpt", plugin), STORE]) as srv, \
                srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            self.assertEqual(c.cmd("RCPT TO:<alice@example.com>").code, 250)
            self.assertEqual(c.cmd("RCPT TO:<alice@EXAMPLE.COM>").code, 250)
            r = c.cmd("RCPT TO:<mallory@example.com>")
            self.assertEqual((r.code, r.enhanced), (550, "5.1.1"), r)
            self.assertEqual(c.cmd("RCPT TO:<any@catchall.example.com>").code,
                             250)
            # listed in a non-local domain: accepted (the list is the policy)
            self.assertEqual(c.cmd("RCPT TO:<bob@other.example>").code, 250)
            self.assertEqual(c.cmd("RCPT TO:<eve@other.example>").code, 550)
            # unlisted domain: no opinion, the relay policy decides
            r = c.cmd("RCPT TO:<x@example.net>")
            self.assertEqual((r.code, r.enhanced), (550, "5.7.1"), r)
            self.assertEqual(c.cmd("RCPT TO:<x@localhost>").code, 250)


if __name__ == "__main__":
    main()
