"""Structured content and message changes (postern/message.h) with the real
daemon: the test_edit module reads the header list and the body as the
core parsed them, inserts, changes and deletes header fields of the
received message, and replaces the body from a pool thread; store_file
must store exactly the expected bytes, and a message nobody changed must
be stored byte for byte as it was received."""

import errno
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    PosternTestCase,
    Server,
    main,
    read_bytes,
    read_envelope,
    store_plugin,
)

STORE = ("90-store", store_plugin(envelope=True))

MESSAGE = (b"Subject: Hello\r\n"
           b"  folded world\r\n"
           b"From: A <a@example.org>\r\n"
           b"X-Drop: this one goes\r\n"
           b"subject: a second subject\r\n"
           b"To: b@example.com\r\n"
           b"\r\n"
           b"The body.\r\n"
           b"Subject: not a header, the body\r\n")
BODY = b"The body.\r\nSubject: not a header, the body\r\n"
RECEIVED_RX = re.compile(rb"Received: .*?\r\n(?=[^ \t])", re.S)


def edit_plugin(**cfg):
    return ("10-edit", {"module": "test_edit", "config": cfg})


def bdat(client, body):
    client.ehlo()
    client.cmd_expect("MAIL FROM:<a@example.org>", 250)
    client.cmd_expect("RCPT TO:<b@example.com>", 250)
    client.send(b"BDAT %d LAST\r\n" % len(body) + body)
    return client.reply()


class MessageEditTest(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_edit")

    def send(self, srv, message, n=1):
        with srv.client() as c:
            c.ehlo()
            for _ in range(n):
                r = c.transaction("a@example.org", ["b@example.com"], message)
                self.assertEqual(r.code, 250, r)
            c.cmd_expect("QUIT", 221)
        msgs = srv.wait_messages(n)
        self.assertEqual(len(msgs), n)
        return msgs

    def stored(self, srv, path):
        data = read_bytes(path)
        env = read_envelope(srv.maildir, path)
        # what the core said the size is, is what was stored
        self.assertEqual(env["size"], len(data))
        return data

    def report(self, path):
        with open(path) as f:
            return json.load(f)

    def test_unchanged_message_is_stored_as_received(self):
        """The parse (header list, lookups, body) costs nothing in the
        bytes: the stored message is the Received line and then exactly
        what the client sent."""
        report = os.path.join("{tmp}", "report.json")
        lookups = [["SUBJECT", 0], ["subject", 1], ["subject", 2],
                   ["received", 0], ["x-missing", 0]]
        with Server(plugins=[edit_plugin(report=report, lookups=lookups),
                             STORE]) as srv:
            msgs = self.send(srv, MESSAGE)
            data = self.stored(srv, msgs[0])
            received = RECEIVED_RX.match(data)
            self.assertIsNotNone(received, data[:300])
            self.assertEqual(data[received.end():], MESSAGE)
            rep = self.report(report.replace("{tmp}", srv.tmp))

        names = [f[0] for f in rep["fields"]]
        self.assertEqual(names, ["Received", "Subject", "From", "X-Drop",
                                 "subject", "To"])
        self.assertEqual(rep["fields"][1],
                         ["Subject", "Hello  folded world",
                          " Hello\r\n  folded world"])
        self.assertEqual("Received:" + rep["fields"][0][2] + "\r\n",
                         received.group(0).decode())
        self.assertEqual(rep["lookups"],
                         ["Hello  folded world", "a second subject", None,
                          rep["fields"][0][1], None])
        self.assertEqual(rep["body"], BODY.decode())
        self.assertEqual(rep["body_size"], len(BODY))
        self.assertEqual(rep["message_size"], len(data))

    def test_header_changes_and_new_body(self):
        """Insert at the top, in the middle and at the end, change the
        second Subject (any case), delete a field, and a 200 KB body
        written from a pool thread: the stored bytes are exactly those,
        for two messages in a row on one connection."""
        store_report = os.path.join("{tmp}", "store.json")
        line = "new body line, long enough to cross many blocks\r\n"
        repeat = 4000
        plugin = edit_plugin(
            insert=[[0, "X-Top", "top"], [3, "X-Mid", "folded\r\n\tvalue"],
                    [1000, "X-End", "end"]],
            change=[["SUBJECT", 1, "changed"], ["x-drop", 0, None],
                    ["X-Missing", 0, "x"], ["To", 1, None]],
            body={"text": line, "repeat": repeat},
            store_report=store_report)
        with Server(plugins=[plugin, STORE]) as srv:
            msgs = self.send(srv, MESSAGE, n=2)
            self.assertEqual(srv.count_log(r"test_edit insert=0"), 6)
            self.assertEqual(srv.count_log(r"test_edit change=0"), 4)
            self.assertEqual(srv.count_log(r"test_edit change=-1"), 4)
            self.assertEqual(srv.count_log(r"test_edit commit=0"), 2)
            new_body = line.encode() * repeat
            for path in msgs:
                data = self.stored(srv, path)
                self.assertTrue(data.startswith(b"X-Top: top\r\n"), data[:80])
                received = RECEIVED_RX.match(data, len(b"X-Top: top\r\n"))
                self.assertIsNotNone(received, data[:300])
                want = (b"X-Top: top\r\n" + received.group(0) +
                        b"Subject: Hello\r\n"
                        b"  folded world\r\n"
                        b"X-Mid: folded\r\n\tvalue\r\n"
                        b"From: A <a@example.org>\r\n"
                        b"subject: changed\r\n"
                        b"To: b@example.com\r\n"
                        b"X-End: end\r\n"
                        b"\r\n" + new_body)
                self.assertEqual(len(data), len(want))
                self.assertEqual(data, want)
            rep = self.report(store_report.replace("{tmp}", srv.tmp))

        # the store hook sees the changed message and can change nothing
        self.assertEqual([f[0] for f in rep["fields"]],
                         ["X-Top", "Received", "Subject", "X-Mid", "From",
                          "subject", "To", "X-End"])
        self.assertEqual(rep["fields"][3][1], "folded\tvalue")
        self.assertEqual(rep["body"], line * repeat)
        self.assertEqual(rep["body_size"], len(new_body))
        self.assertEqual(rep["message_size"], len(want))
        self.assertEqual((rep["store_insert"], rep["store_change"],
                          rep["store_delete"], rep["store_replace"]),
                         (-1, -1, -1, False))

    def test_new_body_over_the_size_limit(self):
        """The session's message size limit holds for the new body: the
        write fails with EFBIG, the commit too, and the message is stored
        with the body it came with."""
        plugin = edit_plugin(body={"text": "x" * 99 + "\r\n", "repeat": 100})
        with Server(plugins=[plugin, STORE],
                    config={"limits": {"message_size": 4096}}) as srv:
            msgs = self.send(srv, MESSAGE)
            self.assertTrue(srv.wait_log(r"test_edit write=-1 errno=%d"
                                         % errno.EFBIG))
            self.assertTrue(srv.wait_log(r"test_edit commit=-1 errno=%d"
                                         % errno.EFBIG))
            data = self.stored(srv, msgs[0])
            self.assertEqual(data[RECEIVED_RX.match(data).end():], MESSAGE)

    def test_headers_only_message(self):
        """A BDAT message that ends inside its header section, without a
        final line end: stored as sent when unchanged; a field appended
        after the last one gets a line end, and a new body gets the empty
        line that separates it."""
        message = b"Subject: s\r\nX-Last: no line end"
        with Server(plugins=[edit_plugin(), STORE]) as srv, \
                srv.client() as c:
            self.assertEqual(bdat(c, message).code, 250)
            data = self.stored(srv, srv.wait_messages(1)[0])
            self.assertEqual(data[RECEIVED_RX.match(data).end():], message)

        plugin = edit_plugin(insert=[[99, "X-End", "e"]],
                             body={"text": "new body\r\n", "repeat": 1})
        with Server(plugins=[plugin, STORE]) as srv, srv.client() as c:
            self.assertEqual(bdat(c, message).code, 250)
            data = self.stored(srv, srv.wait_messages(1)[0])
            self.assertEqual(data[RECEIVED_RX.match(data).end():],
                             message + b"\r\nX-End: e\r\n\r\nnew body\r\n")

    def test_client_gone_while_the_body_is_written(self):
        """The writer outlives the session: its commit fails, nothing is
        stored or leaked, and the daemon goes on."""
        plugin = edit_plugin(body={"text": "late\r\n", "repeat": 10,
                                   "sleep": 1.0})
        with Server(plugins=[plugin, STORE]) as srv:
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(MESSAGE + b".\r\n")
            self.assertTrue(srv.wait_log(r"test_edit replacing"))
            c.abort()
            self.assertTrue(srv.wait_log(r"test_edit commit=-1", timeout=10))
            self.assertEqual(srv.messages(), [])
            self.assertTrue(srv.alive)
            msgs = self.send(srv, MESSAGE)
            data = self.stored(srv, msgs[0])
            self.assertTrue(data.endswith(b"\r\n\r\n" + b"late\r\n" * 10))


if __name__ == "__main__":
    main()
