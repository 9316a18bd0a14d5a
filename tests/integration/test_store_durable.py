"""store_file's group commit: deliveries that finish together share one
durability point, a 250 still comes only once the message is on disk, and
no SIGKILL loses (or duplicates) an acknowledged message. With the journal
("journal": true), a crash leaves a segment that the next start recovers: after
a SIGKILL it only syncs, after a power loss (simulated: the segment is
marked as written under another boot, and files are taken away) it
restores what the page cache lost."""

import os
import random
import re
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    IO_TIMEOUT,
    Client,
    PosternTestCase,
    Server,
    SlowSyscalls,
    main,
    maildir_messages,
    envelope_path,
    maildir_tmp,
    read_bytes,
    read_envelope,
    require_programs,
    split_added_headers,
    store_plugin,
    wait_until,
)

def body_for(tag, size=10240):
    """A unique body: a marker header, then size bytes that differ per
    message, in lines short enough for SMTP."""
    rng = random.Random(tag)
    line = []
    for _ in range(size // 80):
        line.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                            for _ in range(78)))
    return ("X-Test-Tag: %s\r\nSubject: durable %s\r\n\r\n%s\r\n"
            % (tag, tag, "\r\n".join(line))).encode()


def tag_of(data):
    m = re.search(rb"\r\nX-Test-Tag: (\S+)\r\n", data)
    return m.group(1).decode() if m else None


class Sender(threading.Thread):
    """One SMTP session sending messages until told to stop or the server
    goes away; records the tag of every message answered 250."""

    def __init__(self, port, prefix, limit, barrier=None):
        super().__init__(daemon=True)
        self.port, self.prefix, self.limit = port, prefix, limit
        self.barrier = barrier
        self.acked = {}
        self.error = None

    def run(self):
        c = None
        try:
            c = Client(self.port, timeout=10)
            c.expect(220)
            c.ehlo()
            for i in range(self.limit):
                tag = "%s-%d" % (self.prefix, i)
                body = body_for(tag)
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                c.cmd_expect("RCPT TO:<b@example.com>", 250)
                c.cmd_expect("DATA", 354)
                c.send(body)
                if self.barrier is not None:
                    self.barrier.wait(10)
                c.send(b".\r\n")
                r = c.reply()
                if r.code == 250:
                    self.acked[tag] = body
                elif r.code // 100 != 4:
                    self.error = "unexpected reply %r" % (r,)
                    return
        except (OSError, EOFError, AssertionError, threading.BrokenBarrierError):
            # the server was killed under us: what was acked counts
            pass
        finally:
            if c is not None:
                c.abort()


def restart(srv):
    """Start srv again after a SIGKILL (its log starts over)."""
    if srv._log is not None:
        srv._log.close()
        srv._log = None
    srv.start()


class StoreDurableTest(PosternTestCase):
    def test_concurrent_deliveries_share_durability_points(self):
        """20 sessions end their DATA at the same moment: the deliveries
        are covered by fewer fsync rounds than there are messages, every
        one is stored, and each stored line names its commit. The disk is
        made slow (each syncfs waits 0.3 s): the deliveries written while
        a commit waits for it must share the next one. (On a fast disk
        and a slow CPU, under ASan, each delivery may be written after
        the previous commit ended, and rightly commits alone.)"""
        require_programs("strace")
        plugin = store_plugin(fsync=True)
        sessions, rounds = 20, 3
        with Server(plugins={"20-store": plugin},
                    config={"workers": 1}) as srv:
            self.assertTrue(wait_until(srv.worker_pids, IO_TIMEOUT))
            with srv.client() as c:  # the worker serves
                c.ehlo()
            barrier = threading.Barrier(sessions)
            senders = [Sender(srv.port, "b%d" % i, rounds, barrier)
                       for i in range(sessions)]
            with SlowSyscalls(srv.worker_pids()[0], "syncfs", 0.3):
                for s in senders:
                    s.start()
                for s in senders:
                    s.join(60)
            self.assertFalse(any(s.is_alive() for s in senders))
            for s in senders:
                self.assertIsNone(s.error)
                self.assertEqual(len(s.acked), rounds)
            msgs = srv.wait_messages(sessions * rounds)
            self.assertEqual(len(msgs), sessions * rounds)
            # Commit rounds are numbered per worker process.
            stored = srv.log_matches(
                r"stored id=\w+ .* commit=(\d+)(?: worker=(\d+))?")
            self.assertEqual(len(stored), sessions * rounds)
            commits = {}
            for m in stored:
                key = (m.group(2), m.group(1))
                commits[key] = commits.get(key, 0) + 1
            self.assertLess(len(commits), sessions * rounds, commits)
            self.assertGreater(max(commits.values()), 1, commits)
            # at SIGTERM, each worker sums up its batches
            self.assertEqual(srv.stop(), [])
            totals = [(int(d), int(b)) for d, b in re.findall(
                r"group commit: deliveries=(\d+) batches=(\d+) fsync=yes",
                srv.log_text())]
            self.assertTrue(totals, srv.log_tail())
            self.assertEqual(sum(d for d, _ in totals), sessions * rounds)
            self.assertEqual(sum(b for _, b in totals), len(commits))

    def test_failure_in_a_batch_fails_only_its_delivery(self):
        """With fsync on, bob's new/ is a plain file, in a batch shared
        with good deliveries: that delivery (to alice and bob) gets 451
        and leaves nothing behind in either maildir (the commit opens each
        new/ before any rename), the good deliveries get 250."""
        plugin = store_plugin(fsync=True, per_recipient=True)
        with Server(plugins={"20-store": plugin}) as srv:
            bob = os.path.join(srv.maildir, "bob@example.com")
            for sub in ("", "tmp", "cur", "envelope"):
                os.makedirs(os.path.join(bob, sub), exist_ok=True)
            with open(os.path.join(bob, "new"), "w") as f:
                f.write("not a directory\n")
            n = 8
            barrier = threading.Barrier(n)
            codes = [None] * n

            def send(i):
                with srv.client() as c:
                    c.ehlo()
                    rcpts = ["carol%d@example.com" % i]
                    if i == 0:
                        rcpts = ["alice@example.com", "bob@example.com"]
                    c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                    for r in rcpts:
                        c.cmd_expect("RCPT TO:<%s>" % r, 250)
                    c.cmd_expect("DATA", 354)
                    c.send(body_for("f%d" % i))
                    barrier.wait(10)
                    c.send(b".\r\n")
                    codes[i] = c.reply().code

            threads = [threading.Thread(target=send, args=(i,))
                       for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            self.assertEqual(codes, [451] + [250] * (n - 1))
            alice = os.path.join(srv.maildir, "alice@example.com")
            self.assertEqual(maildir_messages(alice), [])
            self.assertEqual(os.listdir(os.path.join(alice, "envelope")), [])
            self.assertEqual(os.listdir(os.path.join(bob, "envelope")), [])
            for i in range(1, n):
                carol = os.path.join(srv.maildir, "carol%d@example.com" % i)
                msgs = maildir_messages(carol)
                self.assertEqual(len(msgs), 1, carol)
                split_added_headers(read_bytes(msgs[0]), body_for("f%d" % i))
            for d in os.listdir(srv.maildir):
                self.assertEqual(maildir_tmp(os.path.join(srv.maildir, d)),
                                 [], d)
            self.assertIsNotNone(srv.wait_log(
                r"delivery failed .*op=open path=.*bob@example.com/new"))

    def test_no_fsync_has_no_durability_point(self):
        """"fsync": false stores without a commit round."""
        with Server(plugins={"20-store": store_plugin(fsync=False)}) as srv, \
                srv.client() as c:
            c.ehlo()
            body = body_for("nofsync")
            self.assertEqual(
                c.transaction("a@example.org", ["b@example.com"], body).code,
                250)
            self.assertEqual(len(srv.wait_messages(1)), 1)
            self.assertIsNotNone(srv.wait_log(r"stored id=\w+ file="))
            self.assertEqual(srv.count_log(r"stored id=.* commit="), 0)

    def test_sigkill_under_load_loses_no_acknowledged_message(self):
        """Sessions send in parallel; postern is SIGKILLed at a random
        moment, restarted, killed again. Every message that got 250 is in
        new/, exactly once, byte for byte, with its envelope."""
        rng = random.Random()
        acked = {}
        srv = Server(plugins={"20-store": store_plugin(fsync=True)})
        try:
            for rnd in range(4):
                restart(srv)
                senders = [Sender(srv.port, "k%d-%d" % (rnd, i), 400)
                           for i in range(12)]
                for s in senders:
                    s.start()
                # kill once some messages are acknowledged, at a random
                # point after that
                self.assertTrue(wait_until(
                    lambda: sum(len(s.acked) for s in senders) >= 5, 30))
                threading.Event().wait(rng.uniform(0.05, 1.5))
                srv.proc.kill()
                srv.proc.wait(10)
                for s in senders:
                    s.join(20)
                self.assertFalse(any(s.is_alive() for s in senders))
                for s in senders:
                    self.assertIsNone(s.error)
                    acked.update(s.acked)
            self.assertGreater(len(acked), 0)
            restart(srv)  # start-up after the last kill, as in production
            seen = {}
            for path in maildir_messages(srv.maildir):
                data = read_bytes(path)
                tag = tag_of(data)
                self.assertIsNotNone(tag, path)
                self.assertNotIn(tag, seen, "delivered twice: %s" % tag)
                seen[tag] = path
                # every message in new/ is whole and has its envelope
                env = read_envelope(srv.maildir, path)
                self.assertEqual(env["rcpt_to"], ["b@example.com"])
            missing = sorted(set(acked) - set(seen))
            self.assertEqual(missing, [], "acknowledged but not stored")
            for tag, body in acked.items():
                split_added_headers(read_bytes(seen[tag]), body)
            # what tmp/ holds was never acknowledged
            for name in maildir_tmp(srv.maildir):
                data = read_bytes(os.path.join(srv.maildir, "tmp", name))
                self.assertNotIn(tag_of(data), acked)
        finally:
            srv.stop()
            if not os.environ.get("POSTERN_KEEP_TMP"):
                srv.cleanup()


def journal_segments(srv, directory=None):
    """The segments in directory (by default the maildir's journal/)."""
    d = directory or os.path.join(srv.maildir, "journal")
    return sorted(os.path.join(d, n) for n in os.listdir(d)
                  if n.endswith(".journal"))


def send_all(srv, tags):
    """One session, a message per tag, each answered 250: {tag: body}."""
    sent = {}
    with srv.client() as c:
        c.ehlo()
        for tag in tags:
            body = body_for(tag, 2048)
            r = c.transaction("a@example.org", ["b@example.com"], body)
            if r.code != 250:
                raise AssertionError("%s: %s" % (tag, r))
            sent[tag] = body
    return sent


def by_tag(root):
    out = {}
    for path in maildir_messages(root):
        out.setdefault(tag_of(read_bytes(path)), []).append(path)
    return out


class StoreJournalTest(PosternTestCase):
    # Checkpoints far apart: the segment outlives the test's deliveries.
    # Two workers, so a segment each.
    plugin = store_plugin(fsync=True, journal=True, journal_checkpoint=3600)

    def killed_with_segment(self, srv, tags):
        """Deliver tags, SIGKILL postern: a segment with their records
        stays (a checkpoint would have deleted it)."""
        sent = send_all(srv, tags)
        srv.proc.kill()
        srv.proc.wait(10)
        # one per worker; the session's worker has the records
        segments = journal_segments(srv)
        used = [p for p in segments if os.path.getsize(p) > 96]
        self.assertEqual(len(used), 1, segments)
        self.assertGreater(os.path.getsize(used[0]), 96 + 2048 * len(tags))
        return sent, used[0]

    def test_sigkill_same_boot_only_syncs(self):
        """After a SIGKILL the page cache kept everything: the next start
        syncs and deletes the segment, and changes no message (one a
        reader took stays taken)."""
        srv = Server(plugins={"20-store": self.plugin},
                     config={"workers": 2})
        try:
            srv.start()
            sent, segment = self.killed_with_segment(srv, ["s1", "s2", "s3"])
            taken = by_tag(srv.maildir)["s2"][0]
            os.unlink(taken)  # a mail reader took it
            before = {p: read_bytes(p) for p in maildir_messages(srv.maildir)}
            restart(srv)
            self.assertIsNotNone(srv.wait_log(
                r"journal recovered segment=\S+ boot=same records=3 "
                r"restored=0 skipped=0"))
            self.assertFalse(os.path.exists(segment))
            after = {p: read_bytes(p) for p in maildir_messages(srv.maildir)}
            # only the segments of the live workers are left (the second
            # may still be starting, slowly under ASan)
            self.assertTrue(wait_until(
                lambda: len(journal_segments(srv)) == 2, 30),
                journal_segments(srv))
            self.assertEqual(after, before)
        finally:
            srv.stop()
            srv.cleanup()

    def test_power_loss_restores_what_was_lost(self):
        """A segment from another boot: a message gone from new/, one cut
        to nothing, a lost envelope are written again from the journal; a
        message a reader moved to cur/ is not delivered twice, unless the
        power loss cut the reader's copy short; a torn record (never
        acknowledged) is skipped."""
        srv = Server(plugins={"20-store": self.plugin},
                     config={"workers": 2})
        try:
            srv.start()
            tags = ["p1", "p2", "p3", "p4", "p5", "p6"]
            sent, segment = self.killed_with_segment(srv, tags)
            paths = {t: p[0] for t, p in by_tag(srv.maildir).items()}
            original = {t: read_bytes(p) for t, p in paths.items()}
            env3 = envelope_path(srv.maildir, paths["p3"])
            with open(env3, "rb") as f:
                original_env3 = f.read()

            # The power loss: written under another boot ...
            with open(segment, "r+b") as f:
                f.seek(32)
                f.write(b"00000000-0000-0000-0000-000000000000")
                # ... with a record whose writer never finished: a whole
                # header, a body of zeros.
                f.seek(96)
                first = f.read(24)
                f.seek(0, os.SEEK_END)
                f.write(first)
                f.write(b"\0" * 4096)
            os.unlink(paths["p1"])
            open(paths["p2"], "wb").close()
            os.unlink(env3)
            cur = os.path.join(srv.maildir, "cur",
                               os.path.basename(paths["p4"]) + ":2,S")
            os.rename(paths["p4"], cur)
            torn = os.path.join(srv.maildir, "cur",
                                os.path.basename(paths["p6"]) + ":2,")
            os.rename(paths["p6"], torn)
            with open(torn, "r+b") as f:
                f.truncate(100)

            restart(srv)
            self.assertIsNotNone(srv.wait_log(
                r"journal recovered segment=\S+ boot=other records=6 "
                r"restored=3 skipped=1"))
            self.assertFalse(os.path.exists(segment))
            now = by_tag(srv.maildir)  # new/ and cur/
            # the torn copy (cut before its tag) stays the reader's, and a
            # whole one is in new/
            self.assertEqual(now.pop(None), [torn])
            self.assertEqual(sorted(now), tags)
            self.assertIn("/new/", now["p6"][0])
            for t in tags:
                self.assertEqual(len(now[t]), 1, t)  # never twice
                self.assertEqual(read_bytes(now[t][0]), original[t], t)
                split_added_headers(read_bytes(now[t][0]), sent[t])
            with open(env3, "rb") as f:
                self.assertEqual(f.read(), original_env3)
            self.assertEqual(now["p4"], [cur])
            # and it goes on delivering
            send_all(srv, ["after"])
            self.assertIn("after", by_tag(srv.maildir))
        finally:
            srv.stop()
            srv.cleanup()

    def test_power_loss_restores_nothing_outside_root(self):
        """Recovery writes only under root: records of a maildir that is
        not under it (here the root changed before the restart) are not
        restored, and their segment stays until a start whose root fits
        restores them."""
        journal = {"journal_dir": "{tmp}/journal"}
        srv = Server(plugins={"20-store": store_plugin(
                         fsync=True, journal=True, journal_checkpoint=3600,
                         **journal)},
                     config={"workers": 1})
        try:
            srv.start()
            send_all(srv, ["o1", "o2"])
            srv.proc.kill()
            srv.proc.wait(10)
            segments = journal_segments(srv, os.path.join(srv.tmp, "journal"))
            self.assertEqual(len(segments), 1, segments)
            segment = segments[0]
            with open(segment, "r+b") as f:  # written under another boot
                f.seek(32)
                f.write(b"00000000-0000-0000-0000-000000000000")
            lost = by_tag(srv.maildir)["o1"][0]
            original = read_bytes(lost)
            os.unlink(lost)

            elsewhere = os.path.join(srv.tmp, "elsewhere")
            srv.write_plugin("20-store", store_plugin(
                root=elsewhere, fsync=True, journal=True,
                journal_checkpoint=3600, **journal))
            restart(srv)
            self.assertIsNotNone(srv.wait_log(
                r"journal recovery incomplete segment=\S+ records=2 "
                r"failed=2 "))
            self.assertIsNotNone(srv.wait_log(
                r"journal record outside the maildir root .*file=\S+ "
                r'maildir="?' + re.escape(srv.maildir) + r'"? '))
            self.assertTrue(os.path.exists(segment))
            self.assertNotIn("o1", by_tag(srv.maildir))
            self.assertEqual(by_tag(elsewhere), {})
            srv.proc.kill()
            srv.proc.wait(10)

            srv.write_plugin("20-store", store_plugin(
                fsync=True, journal=True, journal_checkpoint=3600,
                **journal))
            restart(srv)
            self.assertIsNotNone(srv.wait_log(
                r"journal recovered segment=\S+ boot=other records=2 "
                r"restored=1 skipped=0"))
            self.assertFalse(os.path.exists(segment))
            now = by_tag(srv.maildir)
            self.assertEqual(sorted(now), ["o1", "o2"])
            self.assertEqual(read_bytes(now["o1"][0]), original)
        finally:
            srv.stop()
            srv.cleanup()

    def test_clean_stop_leaves_no_segment(self):
        """SIGTERM: every segment is checkpointed and deleted."""
        with Server(plugins={"20-store": self.plugin},
                    config={"workers": 2}) as srv:
            send_all(srv, ["c1", "c2"])
            self.assertTrue(wait_until(  # one per worker
                lambda: len(journal_segments(srv)) == 2, 30),
                journal_segments(srv))
            self.assertEqual(srv.stop(), [])
            self.assertEqual(journal_segments(srv), [])
            self.assertEqual(sorted(by_tag(srv.maildir)), ["c1", "c2"])


if __name__ == "__main__":
    main()
