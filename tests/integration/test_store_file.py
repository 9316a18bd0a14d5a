"""store_file and the store stage: per-recipient maildirs, 451 when nothing
or nobody can store, nothing half-written on failure, no spool file left
when a client drops mid-DATA."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    PosternTestCase,
    Server,
    files_under,
    main,
    maildir_messages,
    maildir_tmp,
    read_bytes,
    read_envelope,
    split_added_headers,
    store_plugin,
    wait_until,
)

BODY = b"Subject: store\r\n\r\nstored body\r\n"


class StoreFileTest(PosternTestCase):
    def test_per_recipient(self):
        rcpts = ["Alice@example.com", "bob@example.com", "alice@EXAMPLE.com"]
        with Server(plugins={"20-store": store_plugin(per_recipient=True)}) \
                as srv, srv.client() as c:
            c.ehlo()
            r = c.transaction("s@example.org", rcpts, BODY)
            self.assertEqual(r.code, 250, r)
            alice = os.path.join(srv.maildir, "alice@example.com")
            bob = os.path.join(srv.maildir, "bob@example.com")
            for d in (alice, bob):
                msgs = maildir_messages(d)
                self.assertEqual(len(msgs), 1, (d, files_under(srv.maildir)))
                split_added_headers(read_bytes(msgs[0]), BODY)
                self.assertEqual(maildir_tmp(d), [])
            # two spellings of Alice share one maildir and one copy (the core
            # may also have merged them as duplicates)
            env = read_envelope(alice, maildir_messages(alice)[0])
            self.assertIn(env["rcpt_to"], (["Alice@example.com"],
                                           ["Alice@example.com",
                                            "alice@EXAMPLE.com"]))
            env = read_envelope(bob, maildir_messages(bob)[0])
            self.assertEqual(env["rcpt_to"], ["bob@example.com"])
            # no shared maildir at the root
            self.assertEqual(maildir_messages(srv.maildir), [])
            # an address cannot escape the root
            self.assertEqual(c.cmd("MAIL FROM:<s@example.org>").code, 250)
            r = c.cmd('RCPT TO:<"../../evil"@example.com>')
            if r.code == 250:
                c.cmd_expect("DATA", 354)
                c.send(BODY + b".\r\n")
                self.assertEqual(c.reply().code, 250)
                for path in files_under(srv.tmp):
                    self.assertTrue(path.startswith(srv.maildir + os.sep)
                                    or path.startswith(srv.spool + os.sep)
                                    or os.path.dirname(path) in
                                    (srv.tmp, srv.plugins_dir), path)

    def test_no_envelope(self):
        plugin = store_plugin(envelope=False)
        with Server(plugins={"20-store": plugin}) as srv, srv.client() as c:
            c.ehlo()
            self.assertEqual(
                c.transaction("a@example.org", ["b@example.com"], BODY).code,
                250)
            msgs = srv.wait_messages(1)
            self.assertFalse(os.path.exists(os.path.join(srv.maildir,
                                                         "envelope",
                                                         os.path.basename(msgs[0])
                                                         + ".json")))

    def test_fsync_on(self):
        plugin = store_plugin(fsync=True)
        with Server(plugins={"20-store": plugin}) as srv, srv.client() as c:
            c.ehlo()
            self.assertEqual(
                c.transaction("a@example.org", ["b@example.com"], BODY).code,
                250)
            msgs = srv.wait_messages(1)
            split_added_headers(read_bytes(msgs[0]), BODY)

    def test_no_store_module_tempfails(self):
        with Server() as srv, srv.client() as c:
            c.ehlo()
            r = c.transaction("a@example.org", ["b@example.com"], BODY)
            self.assertEqual((r.code, r.enhanced), (451, "4.3.0"), r)
            self.assertEqual(c.cmd("NOOP").code, 250)
            time.sleep(0.2)
            self.assertEqual(srv.spool_files(), [])

    def test_unwritable_root(self):
        with Server(plugins={"20-store": store_plugin()}) as srv, \
                srv.client() as c:
            new = os.path.join(srv.maildir, "new")
            self.assertTrue(os.path.isdir(new), "store_file made no maildir")
            if os.geteuid() == 0:
                # root ignores permissions: a file where new/ should be
                os.rmdir(new)
                with open(new, "w") as f:
                    f.write("not a directory\n")
            else:
                os.chmod(new, 0o500)
                os.chmod(os.path.join(srv.maildir, "tmp"), 0o500)
            c.ehlo()
            r = c.transaction("a@example.org", ["b@example.com"], BODY)
            self.assertEqual(r.code // 100, 4, r)
            self.assertEqual(r.code, 451, r)
            time.sleep(0.2)
            # nothing half-written anywhere
            self.assertEqual(maildir_tmp(srv.maildir), [])
            env_dir = os.path.join(srv.maildir, "envelope")
            if os.path.isdir(env_dir):
                self.assertEqual(os.listdir(env_dir), [])
            if os.path.isdir(new):
                self.assertEqual(os.listdir(new), [])
            self.assertEqual(srv.spool_files(), [])
            # repaired, the next message goes through in the same session
            if os.geteuid() == 0:
                os.unlink(new)
                os.mkdir(new, 0o700)
            else:
                os.chmod(new, 0o700)
                os.chmod(os.path.join(srv.maildir, "tmp"), 0o700)
            r = c.transaction("a@example.org", ["b@example.com"], BODY)
            self.assertEqual(r.code, 250, r)
            self.assertEqual(len(srv.wait_messages(1)), 1)

    def test_per_recipient_unwritable_one(self):
        """One recipient's maildir cannot be made: the whole delivery
        fails with 451 and the other recipient gets nothing either."""
        with Server(plugins={"20-store": store_plugin(per_recipient=True)}) \
                as srv, srv.client() as c:
            with open(os.path.join(srv.maildir, "broken@example.com"), "w") as f:
                f.write("blocks the maildir\n")
            c.ehlo()
            r = c.transaction("a@example.org",
                              ["good@example.com", "broken@example.com"], BODY)
            self.assertEqual(r.code, 451, r)
            time.sleep(0.2)
            good = os.path.join(srv.maildir, "good@example.com")
            self.assertEqual(maildir_messages(good), [])
            self.assertEqual(maildir_tmp(good), [])

    def test_per_recipient_rename_fails_half_way(self):
        """The rename into one maildir's new/ fails after another's
        succeeded: 451 (not every copy is durable), the copy already in
        new/ stays with its envelope, nothing is left in any tmp/."""
        with Server(plugins={"20-store": store_plugin(per_recipient=True)}) \
                as srv, srv.client() as c:
            # bob's maildir exists, but its new/ is a plain file
            bob = os.path.join(srv.maildir, "bob@example.com")
            for sub in ("", "tmp", "cur", "envelope"):
                os.makedirs(os.path.join(bob, sub), exist_ok=True)
            with open(os.path.join(bob, "new"), "w") as f:
                f.write("not a directory\n")
            c.ehlo()
            r = c.transaction("a@example.org",
                              ["alice@example.com", "bob@example.com"], BODY)
            self.assertEqual((r.code, r.enhanced), (451, "4.3.0"), r)
            alice = os.path.join(srv.maildir, "alice@example.com")
            msgs = maildir_messages(alice)
            self.assertEqual(len(msgs), 1, files_under(srv.maildir))
            split_added_headers(read_bytes(msgs[0]), BODY)
            self.assertEqual(read_envelope(alice, msgs[0])["rcpt_to"],
                             ["alice@example.com"])
            self.assertEqual(maildir_tmp(alice), [])
            self.assertEqual(maildir_tmp(bob), [])
            self.assertEqual(os.listdir(os.path.join(bob, "envelope")), [])
            self.assertIsNotNone(srv.wait_log(
                r"partial delivery .*in_new=1 maildirs=2"))

    def test_old_tmp_files_removed_at_start(self):
        srv = Server(plugins={"20-store": store_plugin()}, start=False)
        tmp = os.path.join(srv.maildir, "tmp")
        os.makedirs(tmp)
        now = time.time()
        for name, age in (("old", 37 * 3600), ("young", 35 * 3600),
                          ("fresh", 0)):
            with open(os.path.join(tmp, name), "w") as f:
                f.write("partial\r\n")
            os.utime(os.path.join(tmp, name), (now - age, now - age))
        with srv:
            srv.start()
            # Listening comes before the modules are made: wait for the log.
            self.assertIsNotNone(srv.wait_log(
                r"older than 36 hours .*removed=1 maildirs=1"), srv.log_tail())
            self.assertEqual(maildir_tmp(srv.maildir), ["fresh", "young"])

    def test_client_drops_mid_data(self):
        with Server(plugins={"20-store": store_plugin()}) as srv:
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(b"Subject: dropped\r\n\r\n" + b"partial line\r\n" * 5000)
            time.sleep(0.3)
            c.close()
            self.assertTrue(wait_until(lambda: srv.spool_files() == [], 5.0),
                            "spool not cleaned: %s" % srv.spool_files())
            time.sleep(0.3)
            self.assertEqual(srv.messages(), [])
            self.assertEqual(maildir_tmp(srv.maildir), [])
            self.assertTrue(srv.alive)
            with srv.client() as c2:
                c2.ehlo()
                r = c2.transaction("a@example.org", ["b@example.com"], BODY)
                self.assertEqual(r.code, 250, r)

    def test_client_drops_mid_bdat(self):
        with Server(plugins={"20-store": store_plugin()}) as srv:
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.send(b"BDAT 100000 LAST\r\n" + b"x" * 50000)
            time.sleep(0.3)
            c.close()
            self.assertTrue(wait_until(lambda: srv.spool_files() == [], 5.0),
                            "spool not cleaned: %s" % srv.spool_files())
            self.assertEqual(srv.messages(), [])

    def test_envelope_fields(self):
        with Server(plugins={"20-store": store_plugin()}) as srv, \
                srv.client() as c:
            c.cmd_expect("EHLO env.client.test", 250)
            c.cmd_expect("MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME",
                         250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("RCPT TO:<c@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(BODY + b".\r\n")
            self.assertEqual(c.reply().code, 250)
            msgs = srv.wait_messages(1)
            data = read_bytes(msgs[0])
            env = read_envelope(srv.maildir, msgs[0])
            with open(os.path.join(srv.maildir, "envelope",
                                   os.path.basename(msgs[0]) + ".json")) as f:
                json.load(f)  # one JSON document
            self.assertEqual(env["helo"], "env.client.test")
            self.assertEqual(env["mail_params"].get("SIZE"), "100")
            self.assertEqual(env["mail_params"].get("BODY"), "8BITMIME")
            self.assertEqual(env["rcpt_to"], ["b@example.com", "c@example.com"])
            self.assertEqual(env["size"], len(data))
            self.assertRegex(env["received_at"], r"^\d{4}-\d\d-\d\dT")


if __name__ == "__main__":
    main()
