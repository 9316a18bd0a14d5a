"""Envelope changes and what becomes of a message (postern/message.h,
ABI 1.3), through the test_envelope plugin and the real store_file:
sender change, recipients added and deleted (what store_file records in
its envelope), POSTERN_DISCARD at mail, rcpt, message and where it is not
possible, quarantine into the Maildir++ folder, 5xx-and-close and
multi-line replies, as smtplib and a raw client see them."""

import os
import smtplib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    PosternTestCase,
    Server,
    async_plugin,
    main,
    maildir_messages,
    read_bytes,
    read_envelope,
    store_plugin,
)

BODY = b"Subject: envelope\r\n\r\nenvelope body\r\n"
QUARANTINE = ".Quarantine"


def plugins():
    return [("10-envelope", {"module": "test_envelope"}),
            ("90-store", store_plugin(envelope=True))]


def added_header(data, name):
    """The value of the first header field called name in the stored
    message (unfolded), or None."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    for field in head.replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n"):
        key, _, value = field.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return None


def results_of(data):
    """X-Envelope-Test: "k=v k=v" as a dict."""
    value = added_header(data, "X-Envelope-Test")
    if value in (None, "none"):
        return {}
    return dict(item.split("=", 1) for item in value.split())


class EnvelopeTest(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_envelope")

    def send(self, srv, sender, rcpts):
        with srv.smtplib() as s:
            s.ehlo()
            r = s.sendmail(sender, rcpts, BODY)
            self.assertEqual(r, {})
            code, text = s.noop()
            self.assertEqual(code, 250)

    def one_message(self, srv, root=None):
        msgs = srv.wait_messages(1, root=root)
        self.assertEqual(len(msgs), 1, msgs)
        root = root or srv.maildir
        return read_bytes(msgs[0]), read_envelope(root, msgs[0])

    def test_sender_changed(self):
        with Server(plugins=plugins()) as srv:
            with srv.smtplib() as s:
                s.ehlo()
                s.mail("rewrite@example.org", ["SIZE=100"])
                s.rcpt("a@example.com")
                code, _ = s.data(BODY)
                self.assertEqual(code, 250)
            data, env = self.one_message(srv)
            self.assertEqual(env["mail_from"], "new-sender@example.net")
            # The params text replaced the client's: SIZE is gone.
            self.assertEqual(env["mail_params"], {"BODY": "8BITMIME"})
            res = results_of(data)
            self.assertEqual(res["from_bad"], "-1")
            self.assertEqual(res["from_bad_params"], "-1")
            self.assertEqual(res["from_ok"], "0")
            self.assertEqual(res["old_from_kept"], "1")
            self.assertTrue(srv.wait_log(
                r"envelope id=\S+ module=\"?10-envelope\"? "
                r"mail_from=\"?new-sender@example.net"))
            self.assertTrue(srv.wait_log(r"store_changes=-1,-1,-1,-1 "
                                         r"quarantined=\"?-\"? discarded=0"))

    def test_rcpt_added_skips_relay_policy(self):
        with Server(plugins=plugins()) as srv:
            # The client itself may not relay there ...
            with srv.smtplib() as s:
                s.ehlo()
                s.mail("a@example.org")
                code, _ = s.rcpt("bcc@elsewhere.org")
                self.assertEqual(code, 550)
            # ... but a module that adds it vouches for it.
            self.send(srv, "a@example.org", ["add-bcc@example.com"])
            data, env = self.one_message(srv)
            # Added while RCPT TO:<add-bcc@...> was under decision: first.
            self.assertEqual(env["rcpt_to"],
                             ["bcc@elsewhere.org", "add-bcc@example.com"])
            self.assertEqual(results_of(data)["add_bcc"], "0")
            self.assertTrue(srv.wait_log(r"rcpt_added=\"?bcc@elsewhere.org"))

    def test_rcpt_deleted_at_rcpt(self):
        with Server(plugins=plugins()) as srv:
            self.send(srv, "a@example.org",
                      ["first@example.com", "drop-first@example.com"])
            data, env = self.one_message(srv)
            self.assertEqual(env["rcpt_to"], ["drop-first@example.com"])
            self.assertEqual(results_of(data)["drop_first"], "0")
            self.assertTrue(srv.wait_log(r"dropped rcpt=\"?first@example.com"))

    def test_rcpt_swapped_at_message(self):
        """Delete (domain compared case-insensitively) and add at the
        message hook; the Received line was written at the end of data and
        names the recipient as the client gave it."""
        with Server(plugins=plugins()) as srv:
            self.send(srv, "a@example.org", ["swap@example.com"])
            data, env = self.one_message(srv)
            self.assertEqual(env["rcpt_to"], ["swapped@example.com"])
            res = results_of(data)
            self.assertEqual(res["swap_del"], "0")
            self.assertEqual(res["swap_del_again"], "-1")
            self.assertEqual(res["swap_add"], "0")
            self.assertEqual(res["swap_dup"], "0")
            self.assertEqual(res["swap_bad"], "-1")
            self.assertEqual(res["rcpts"], "1")
            self.assertIn("for <swap@example.com>",
                          added_header(data, "Received"))

    def test_all_rcpts_deleted_is_discard(self):
        with Server(plugins=plugins()) as srv:
            with srv.smtplib() as s:
                s.ehlo()
                s.mail("a@example.org")
                s.rcpt("delete-all@example.com")
                s.rcpt("b@example.com")
                code, text = s.data(BODY)
                self.assertEqual(code, 250)
                self.assertIn(b"accepted", text)
            self.assertTrue(srv.wait_log(
                r"discarded id=\S+ .*rcpts=0 .*code=250 "
                r"module=\"?10-envelope\"? hook=- reason=recipients_deleted"))
            self.assertEqual(srv.count_log(r"deleted rc=0 rcpt="), 2)
            self.assertEqual(maildir_messages(srv.maildir), [])

    def discarded(self, sender, rcpts, hook):
        with Server(plugins=plugins()) as srv:
            with srv.smtplib() as s:
                s.ehlo()
                code, _ = s.mail(sender)
                self.assertEqual(code, 250)
                for r in rcpts:
                    code, _ = s.rcpt(r)
                    self.assertEqual(code, 250)
                code, text = s.data(BODY)
                self.assertEqual(code, 250)
                self.assertIn(b"2.0.0 Ok: accepted as ", text)
                # The session goes on: the next message is stored.
                s.sendmail("a@example.org", ["b@example.com"], BODY)
            self.assertTrue(srv.wait_log(
                r"discarded id=\S+ .*code=250 module=\"?10-envelope\"? "
                r"hook=%s reason=discard" % hook))
            self.assertEqual(srv.count_log(r" discarded id="), 1)
            self.assertEqual(len(srv.wait_messages(1)), 1)
            # Nothing but the second message: no content check, no store.
            self.assertEqual(srv.count_log(r"store_changes="), 1)

    def test_discard_at_mail(self):
        self.discarded("discard@example.org", ["b@example.com"], "mail")

    def test_discard_at_rcpt(self):
        self.discarded("a@example.org",
                       ["b@example.com", "discard@example.com"], "rcpt")

    def test_discard_at_message(self):
        self.discarded("a@example.org", ["discard-msg@example.com"], "message")

    def test_discard_at_helo_is_tempfail(self):
        with Server(plugins=plugins()) as srv:
            with srv.client() as c:
                r = c.cmd("EHLO discard.test")
                self.assertEqual(r.code, 451, r)
                self.assertEqual(c.cmd("EHLO client.test").code, 250)
            self.assertTrue(srv.wait_log(
                r"hook=helo module=\"?10-envelope\"? result=discard is not "
                r"possible here; treated as tempfail"))

    def test_quarantine(self):
        with Server(plugins=plugins()) as srv:
            self.send(srv, "a@example.org", ["quarantine@example.com"])
            folder = os.path.join(srv.maildir, QUARANTINE)
            data, env = self.one_message(srv, root=folder)
            self.assertEqual(env["quarantine"], "test: suspicious  ")
            res = results_of(data)
            self.assertEqual(res["quarantine"], "0")
            self.assertEqual(res["quarantine_again"], "0")
            self.assertEqual(maildir_messages(srv.maildir), [])
            self.assertTrue(srv.wait_log(r"quarantined id=\S+ .*code=250"))
            self.assertTrue(srv.wait_log(r"stored id=\S+ .*quarantine=yes"))
            self.assertTrue(srv.wait_log(r"store_changes=-1,-1,-1,-1 "
                                         r"quarantined=\"test: suspicious"))
            # The next message is not quarantined.
            self.send(srv, "a@example.org", ["b@example.com"])
            data, env = self.one_message(srv)
            self.assertIsNone(env["quarantine"])

    def test_reject_and_close_with_5xx(self):
        with Server(plugins=plugins()) as srv:
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                r = c.cmd("RCPT TO:<close@example.com>")
                self.assertEqual(r.code, 554, r)
                self.assertEqual(r.lines, ["5.7.1 go away"])
                self.assertTrue(c.wait_closed())
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                r = c.cmd("RCPT TO:<tempclose@example.com>")
                self.assertEqual(r.code, 421, r)
                self.assertEqual(r.enhanced, "4.7.0")
                self.assertTrue(c.wait_closed())
            # smtplib sees the 554, then a closed connection.
            with srv.smtplib() as s:
                s.ehlo()
                s.mail("a@example.org")
                code, text = s.rcpt("close@example.com")
                self.assertEqual((code, text), (554, b"5.7.1 go away"))
                with self.assertRaises(smtplib.SMTPServerDisconnected):
                    s.noop()

    def test_multi_line_reply(self):
        with Server(plugins=plugins()) as srv:
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                c.send(b"RCPT TO:<multi@example.com>\r\n")
                lines = [c.read_line() for _ in range(3)]
                self.assertEqual(lines, ["550-5.7.1 first line",
                                         "550-5.7.1 second line",
                                         "550 5.7.1 last line"])
                self.assertEqual(c.cmd("NOOP").code, 250)
            with srv.smtplib() as s:
                s.ehlo()
                s.mail("a@example.org")
                code, text = s.rcpt("multi@example.com")
                self.assertEqual(code, 550)
                self.assertEqual(text, b"5.7.1 first line\n5.7.1 second line\n"
                                       b"5.7.1 last line")


class AsyncOutcomeTest(PosternTestCase):
    """The same results passed to postern_resume() by a pending handler."""

    def setUp(self):
        self.require_plugin("test_async")

    def test_async_discard_at_store(self):
        hooks = {"store": {"delay": 0.05, "result": "discard"}}
        with Server(plugins=[("10-async", async_plugin(hooks)),
                             ("90-store", store_plugin())]) as srv:
            with srv.smtplib() as s:
                s.ehlo()
                s.mail("a@example.org")
                s.rcpt("b@example.com")
                code, text = s.data(BODY)
                self.assertEqual(code, 250)
                self.assertIn(b"accepted as", text)
            self.assertTrue(srv.wait_log(
                r"discarded id=\S+ .*module=\"?10-async\"? hook=store "
                r"reason=discard"))
            self.assertEqual(maildir_messages(srv.maildir), [])

    def test_async_5xx_disconnect_at_data(self):
        hooks = {"data": {"delay": 0.05, "result": "disconnect", "code": 554,
                          "enhanced": "5.7.1", "text": "no data from you"}}
        with Server(plugins=[("10-async", async_plugin(hooks)),
                             ("90-store", store_plugin())]) as srv:
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                c.cmd_expect("RCPT TO:<b@example.com>", 250)
                r = c.cmd("DATA")
                self.assertEqual(r.code, 554, r)
                self.assertEqual(r.lines, ["5.7.1 no data from you"])
                self.assertTrue(c.wait_closed())
            self.assertEqual(maildir_messages(srv.maildir), [])


if __name__ == "__main__":
    main()
