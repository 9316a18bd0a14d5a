"""The thread-facing plugin API of issue 10 (test_threads plugin):

- a module's own thread resumes a pending handler through
  postern_loop_call(), and logs with the pending context meanwhile;
- log lines name the instance from create() and from a loop call queued
  there, and keep the session id off the loop thread and once orphaned;
- a module with a pool of its own ("threads" in its plugins.d file)
  whose jobs block does not hold up store_file's storage;
- limits.pending_timeout ends a handler that never resumes with a 421;
- the new keys are validated by --check-config.

No wall-clock bound is asserted: a slow job waits on a file the test
creates, so "the message was stored while the slow job was still running"
is a fact of order, not of time.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    POSTERN_BIN,
    PosternTestCase,
    Server,
    main,
    store_plugin,
    test_plugin_available,
)

BODY = b"Subject: async api\r\n\r\nbody\r\n"


def threads_plugin(mode, release=None, **extra):
    cfg = {"mode": mode}
    if release:
        cfg["release"] = release
    cfg.update(extra)
    return {"module": "test_threads", "hooks": ["rcpt"], "config": cfg}


def module_lines(srv, text):
    """(sid, line) of each "module" log line that contains text."""
    out = []
    for line in srv.log_text().splitlines():
        if " module " not in line or text not in line:
            continue
        sid = line.split(" ")[2]
        out.append((sid, line))
    return out


class AsyncApiTest(PosternTestCase):
    def setUp(self):
        self.assertTrue(test_plugin_available("test_threads"),
                        "test plugin test_threads.so not built")

    def release_path(self, srv):
        return os.path.join(srv.tmp, "release")

    def session_id(self, srv, port):
        m = srv.wait_log(r" info ([0-9a-f]{16}) connect client=127\.0\.0\.1 "
                         r"port=%d " % port)
        self.assertIsNotNone(m, srv.log_tail())
        return m.group(1)

    def test_create_lines_name_the_instance(self):
        # Issue 10: lines from create() said module=-.
        plugins = [("10-threads", threads_plugin("never"))]
        # Each worker process creates its own instance: count one.
        with Server(plugins=plugins, config={"workers": 1}) as srv:
            self.assertTrue(srv.wait_log(r"test_threads create_call ran"),
                            srv.log_tail())
            for text in ("test_threads created", "test_threads create_call"):
                lines = module_lines(srv, text)
                self.assertEqual(len(lines), 1, srv.log_tail())
                self.assertIn(' module module="10-threads" ' + text,
                              lines[0][1])

    def test_own_thread_resumes_through_loop_call(self):
        plugins = [("10-threads", threads_plugin("thread", "{tmp}/release",
                                                 result="reject")),
                   ("90-store", store_plugin())]
        with Server(plugins=plugins) as srv, srv.client() as c:
            sid = self.session_id(srv, c.sock.getsockname()[1])
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.send(b"RCPT TO:<b@example.com>\r\n")
            self.assertTrue(srv.wait_log(r"test_threads waiting where=thread"),
                            srv.log_tail())
            open(self.release_path(srv), "w").close()
            r = c.reply()
            self.assertEqual((r.code, r.enhanced), (550, "5.7.1"), r)
            self.assertIn("test_threads says no", r.text)
            # The thread's lines (off the loop thread, pending context)
            # and the loop call's carry the session and the instance.
            for text in ("waiting where=thread", "released where=thread",
                         "resumed orphaned=0"):
                lines = module_lines(srv, "test_threads " + text)
                self.assertEqual(len(lines), 1, srv.log_tail())
                self.assertEqual(lines[0][0], sid, lines)
                self.assertIn('module="10-threads"', lines[0][1])
            # the session goes on: the next recipient is decided the same way
            c.send(b"RCPT TO:<c@example.com>\r\n")
            self.assertEqual(c.reply().code, 550)

    def test_orphaned_context_keeps_the_session_id(self):
        # Issue 10: lines of an orphaned context lost their session id.
        plugins = [("10-threads", threads_plugin("thread", "{tmp}/release"))]
        with Server(plugins=plugins) as srv:
            c = srv.client()
            sid = self.session_id(srv, c.sock.getsockname()[1])
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.send(b"RCPT TO:<b@example.com>\r\n")
            self.assertTrue(srv.wait_log(r"test_threads waiting where=thread"))
            c.abort()
            self.assertTrue(srv.wait_log(r" %s disconnect " % sid),
                            srv.log_tail())
            open(self.release_path(srv), "w").close()
            self.assertTrue(srv.wait_log(r"test_threads resumed orphaned=1"),
                            srv.log_tail())
            for text in ("released where=thread", "resumed orphaned=1"):
                lines = module_lines(srv, "test_threads " + text)
                self.assertEqual(len(lines), 1, srv.log_tail())
                self.assertEqual(lines[0][0], sid, lines)
                self.assertIn('module="10-threads"', lines[0][1])
            self.assertTrue(srv.alive)

    def test_slow_module_pool_does_not_hold_storage(self):
        # Issue 10: module jobs shared the threads of store_file. The slow
        # instance has one thread of its own; the shared module pool has
        # one thread too, which the slow job would hold if it were there.
        plugins = [("10-slow", dict(threads_plugin("pool", "{tmp}/release",
                                                   match="slow"), threads=1)),
                   ("90-store", store_plugin())]
        with Server(plugins=plugins, config={"pool_threads": 1}) as srv:
            slow = srv.client()
            slow_sid = self.session_id(srv, slow.sock.getsockname()[1])
            slow.ehlo()
            slow.cmd_expect("MAIL FROM:<a@example.org>", 250)
            slow.send(b"RCPT TO:<slow@example.com>\r\n")
            m = srv.wait_log(r" ([0-9a-f]{16}) module .*test_threads waiting "
                             r"where=pool")
            self.assertIsNotNone(m, srv.log_tail())
            self.assertEqual(m.group(1), slow_sid)  # logged on a pool thread
            # Another connection's message is stored meanwhile.
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                c.cmd_expect("RCPT TO:<fast@example.com>", 250)
                c.cmd_expect("DATA", 354)
                c.send(BODY + b".\r\n")
                self.assertEqual(c.reply().code, 250)
            self.assertEqual(len(srv.messages()), 1)
            # ... while the slow job was still waiting for its release.
            self.assertFalse(os.path.exists(self.release_path(srv)))
            self.assertEqual(srv.count_log(r"test_threads released"), 0)
            open(self.release_path(srv), "w").close()
            r = slow.reply()
            self.assertEqual(r.code, 250, r)
            slow.cmd_expect("DATA", 354)
            slow.send(BODY + b".\r\n")
            self.assertEqual(slow.reply().code, 250)
            slow.close()
            self.assertEqual(len(srv.wait_messages(2)), 2)

    def test_pending_timeout_ends_a_handler_that_never_resumes(self):
        plugins = [("10-never", threads_plugin("never"))]
        cfg = {"limits": {"pending_timeout": 1}}
        with Server(plugins=plugins, config=cfg) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.send(b"RCPT TO:<b@example.com>\r\n")
            r = c.reply(timeout=30)
            self.assertEqual((r.code, r.enhanced), (421, "4.4.2"), r)
            self.assertTrue(c.wait_closed())
            self.assertTrue(srv.wait_log(r" disconnect reason=timeout"))

    def check_config(self, plugins=None, config=None):
        srv = Server(plugins=plugins or {}, config=config, start=False)
        try:
            return subprocess.run([POSTERN_BIN, "--check-config", "-c",
                                   srv.config_path], capture_output=True,
                                  text=True, timeout=30)
        finally:
            srv.cleanup()

    def test_config_keys_are_checked(self):
        bad = [
            ({"limits": {"pending_timeout": 0}}, None,
             "$.limits.pending_timeout: expected a number of seconds between "
             "1 and 86400, got 0"),
            ({"spool_threads": 0}, None,
             "$.spool_threads: expected an integer between 1 and 64, got 0"),
            ({"pool_threads": 65}, None,
             "$.pool_threads: expected an integer between 1 and 64, got 65"),
            (None, {"10-slow.json": dict(threads_plugin("never"), threads=0)},
             "10-slow.json: $.threads: expected an integer between 1 and 64, "
             "got 0"),
            (None, {"10-slow.json": dict(threads_plugin("never"),
                                         threads="2")},
             "10-slow.json: $.threads: expected an integer between 1 and 64, "
             "got \"2\""),
        ]
        for config, plugins, message in bad:
            r = self.check_config(plugins, config)
            self.assertNotEqual(r.returncode, 0, message)
            self.assertIn(message, r.stderr)
        good = self.check_config(
            {"10-slow.json": dict(threads_plugin("never"), threads=3)},
            {"limits": {"pending_timeout": 30}, "spool_threads": 1,
             "pool_threads": 2})
        self.assertEqual(good.returncode, 0, good.stderr)


if __name__ == "__main__":
    main()
