"""Many sessions at once on one loop: 200 concurrent smtplib transactions
all land, and a slow asynchronous hook in one session does not hold up the
others."""

import os
import smtplib
import socket
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    PosternTestCase,
    Server,
    async_plugin,
    main,
    read_bytes,
    read_envelope,
    split_added_headers,
    wait_until,
    store_plugin,
)

CONFIG = {"limits": {"connections": 1000, "connections_per_ip": 1000}}


def run_threads(targets, timeout):
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()]


class ConcurrencyTest(PosternTestCase):
    def test_200_concurrent_sessions(self):
        n = 200
        plugins = {"20-store": store_plugin()}
        with Server(plugins=plugins, config=CONFIG) as srv:
            barrier = threading.Barrier(n, timeout=30)
            results = [None] * n
            bodies = [b"Subject: c%d\r\n\r\nconcurrent body %d\r\n" % (i, i)
                      for i in range(n)]

            def client(i):
                def run():
                    try:
                        barrier.wait()
                        with smtplib.SMTP("127.0.0.1", srv.port,
                                          local_hostname="c%d.test" % i,
                                          timeout=60) as s:
                            s.sendmail("s%d@example.org" % i,
                                       ["r%d@example.com" % i], bodies[i])
                            s.quit()
                        results[i] = "ok"
                    except Exception as e:  # reported below
                        results[i] = repr(e)
                return run

            start = time.monotonic()
            hung = run_threads([client(i) for i in range(n)], timeout=120)
            elapsed = time.monotonic() - start
            self.assertEqual(hung, [], "client threads still running")
            failures = [(i, r) for i, r in enumerate(results) if r != "ok"]
            self.assertEqual(failures, [], "%d of %d failed" % (len(failures), n))
            msgs = srv.wait_messages(n, timeout=10)
            self.assertEqual(len(msgs), n)
            seen = set()
            for path in msgs:
                env = read_envelope(srv.maildir, path)
                i = int(env["mail_from"][1:].split("@")[0])
                self.assertEqual(env["rcpt_to"], ["r%d@example.com" % i])
                split_added_headers(read_bytes(path), bodies[i])
                seen.add(i)
            self.assertEqual(seen, set(range(n)))
            self.assertEqual(srv.spool_files(), [])
            sys.stderr.write("\n200 sessions in %.2f s\n" % elapsed)

    def test_200_concurrent_sessions_discard(self):
        n = 200
        with Server(plugins={"20-discard": {"module": "discard"}},
                    config=CONFIG) as srv:
            barrier = threading.Barrier(n, timeout=30)
            codes = [None] * n

            def client(i):
                def run():
                    try:
                        barrier.wait()
                        with smtplib.SMTP("127.0.0.1", srv.port,
                                          local_hostname="d%d.test" % i,
                                          timeout=60) as s:
                            s.ehlo()
                            s.mail("a@example.org")
                            s.rcpt("b@example.com")
                            codes[i] = s.data(b"Subject: d\r\n\r\nx\r\n")[0]
                            s.quit()
                    except Exception as e:
                        codes[i] = repr(e)
                return run

            hung = run_threads([client(i) for i in range(n)], timeout=120)
            self.assertEqual(hung, [])
            bad = [(i, c) for i, c in enumerate(codes) if c != 250]
            self.assertEqual(bad, [])
            self.assertEqual(srv.messages(), [])
            self.assertEqual(srv.spool_files(), [])

    def test_slow_hook_does_not_block_others(self):
        """Five sessions that start while another is parked in a slow
        asynchronous rcpt hook all deliver their message before that hook
        resumes."""
        hooks = {"rcpt": {"delay": 3.0, "result": "continue", "match": "slow"}}
        plugins = [("10-async", async_plugin(hooks)),
                   ("20-store", store_plugin())]
        with Server(plugins=plugins, config=CONFIG) as srv:
            done = []
            errors = []

            def send(name, sender):
                try:
                    with smtplib.SMTP("127.0.0.1", srv.port,
                                      local_hostname=name + ".test",
                                      timeout=30) as s:
                        s.sendmail(sender, ["b@example.com"],
                                   b"Subject: %s\r\n\r\nx\r\n" % name.encode())
                        s.quit()
                    done.append(name)
                except Exception as e:
                    errors.append((name, repr(e)))

            slow = threading.Thread(target=send, args=("slow", "slow@example.org"),
                                    daemon=True)
            slow.start()
            # wait until the slow session is parked in its rcpt hook
            self.assertIsNotNone(
                srv.wait_log(r"test_async pending hook=rcpt", timeout=5))
            hung = run_threads([lambda i=i: send("fast%d" % i, "fast@example.org")
                                for i in range(5)], timeout=60)
            self.assertEqual((hung, errors), ([], []))
            self.assertEqual(sorted(done), ["fast%d" % i for i in range(5)])
            self.assertEqual(srv.count_log(r"test_async resumed hook=rcpt"), 0,
                             "the slow hook resumed before the fast sessions "
                             "were done")
            slow.join(60)
            self.assertEqual(errors, [])
            self.assertIn("slow", done)
            self.assertEqual(srv.count_log(r"test_async resumed hook=rcpt"), 1)
            self.assertEqual(len(srv.wait_messages(6)), 6)

    def test_many_pending_hooks_run_in_parallel(self):
        """20 sessions parked in an asynchronous mail hook at once: every
        hook starts before any resumes, so a pending hook holds up no
        other session."""
        n = 20
        hooks = {"mail": {"delay": 2.0, "result": "continue"}}
        plugins = [("10-async", async_plugin(hooks)),
                   ("20-store", store_plugin())]
        with Server(plugins=plugins, config=CONFIG) as srv:
            # Every session is greeted before any sends MAIL.
            barrier = threading.Barrier(n, timeout=30)
            results = [None] * n

            def client(i):
                def run():
                    try:
                        with smtplib.SMTP("127.0.0.1", srv.port,
                                          local_hostname="p%d.test" % i,
                                          timeout=30) as s:
                            s.ehlo()
                            barrier.wait()
                            s.sendmail("a@example.org", ["b@example.com"],
                                       b"Subject: p\r\n\r\nx\r\n")
                            s.quit()
                        results[i] = "ok"
                    except Exception as e:
                        results[i] = repr(e)
                return run

            hung = run_threads([client(i) for i in range(n)], timeout=60)
            self.assertEqual(hung, [])
            self.assertEqual(results, ["ok"] * n)
            events = [(m.group(2), m.group(1)) for m in srv.log_matches(
                r"^\S+ \S+ (\S+) module \S+ test_async (pending|resumed) "
                r"hook=mail\b")]
            self.assertEqual([e for e, _ in events],
                             ["pending"] * n + ["resumed"] * n,
                             "a hook resumed before every hook had started")
            self.assertEqual(len({sid for _, sid in events}), n,
                             "not %d sessions" % n)
            self.assertEqual(len(srv.wait_messages(n)), n)


class DrainTest(PosternTestCase):
    """SIGTERM: new clients are refused at once, idle sessions are told
    421 4.3.2 (RFC 5321 3.8), a transaction in progress still finishes
    with its 250, then that session is told 421 too."""

    def test_sigterm_drains(self):
        plugins = {"20-store": store_plugin()}
        with Server(plugins=plugins) as srv:
            # The port answers once one worker serves; the others may
            # still be starting (slowly, under ASan): wait for all.
            ready = srv.wait_log(r"supervisor_ready .*workers=(\d+)", 30)
            self.assertIsNotNone(ready, srv.log_tail())
            workers = int(ready.group(1))
            idle = srv.client()
            idle.ehlo()
            busy = srv.client()
            busy.ehlo()
            busy.cmd_expect("MAIL FROM:<a@example.org>", 250)
            busy.cmd_expect("RCPT TO:<b@example.com>", 250)
            srv.proc.send_signal(signal.SIGTERM)
            self.assertTrue(srv.wait_log(r"draining", 5))
            # Every worker closes its copy of the listening socket before
            # it logs "draining"; the port is closed once all of them did.
            self.assertTrue(wait_until(
                lambda: srv.count_log(r" draining ") == workers, 10),
                srv.log_tail())
            r = idle.reply()
            self.assertEqual((r.code, r.enhanced), (421, "4.3.2"), r)
            self.assertTrue(idle.wait_closed())
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", srv.port), timeout=2)
            busy.cmd_expect("DATA", 354)
            busy.send(b"Subject: drain\r\n\r\nstill delivered\r\n.\r\n")
            self.assertEqual(busy.reply().code, 250)
            r = busy.cmd("MAIL FROM:<a@example.org>")
            self.assertEqual((r.code, r.enhanced), (421, "4.3.2"), r)
            self.assertTrue(busy.wait_closed())
            self.assertEqual(len(srv.wait_messages(1)), 1)
            srv.proc.wait(10)
            self.assertEqual(srv.proc.returncode, 0)


if __name__ == "__main__":
    main()
