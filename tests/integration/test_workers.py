"""The supervisor and its worker processes: SIGTERM drains (mid-DATA
messages are stored or refused with 4xx, never lost), SIGHUP reloads a
checked configuration under load without losing or refusing mail, a
broken configuration changes nothing, a killed worker is restarted and a
killed supervisor takes its workers with it."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    IO_TIMEOUT,
    STOP_TIMEOUT,
    PosternTestCase,
    Server,
    Client,
    is_listening,
    main,
    parse_log_line,
    read_bytes,
    require_programs,
    store_plugin,
    wait_until,
)

SMTP_SOURCE = "smtp-source"


def setUpModule():
    require_programs(SMTP_SOURCE)


def worker_pids(srv):
    """The supervisor's live children (its workers), sorted; a worker
    that has exited but is not reaped yet is not counted."""
    pid = srv.proc.pid
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return sorted(int(p) for p in f.read().split()
                          if pid_alive(int(p)))
    except OSError:
        return []


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_and_wait(srv):
    """SIGTERM the supervisor; its exit code."""
    srv.proc.send_signal(signal.SIGTERM)
    return srv.proc.wait(STOP_TIMEOUT + 40)


def log_events(srv):
    """(event, fields) for every log line, in order."""
    out = []
    for line in srv.log_text().splitlines():
        try:
            out.append(parse_log_line(line))
        except ValueError:
            pass
    return out


def stored_ids(srv):
    ids = set()
    for path in srv.messages():
        m = re.search(rb"X-Test-Id: (\d+)", read_bytes(path))
        if m:
            ids.add(int(m.group(1)))
    return ids


class DrainTest(PosternTestCase):
    def test_sigterm_mid_data_stores_or_refuses_every_message(self):
        """Clients in the middle of DATA when SIGTERM comes finish their
        message: each gets 250 with the message on disk, or 4xx. A client
        between transactions gets 421 4.3.2 at once; after a message, the
        421 follows its 250."""
        with Server(plugins={"store": store_plugin(fsync=True)},
                    config={"workers": 2}) as srv:
            self.assertIsNotNone(srv.wait_log(r"supervisor_ready", IO_TIMEOUT))
            busy = []
            for i in range(6):
                c = Client(srv.port)
                c.expect(220)
                c.ehlo()
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                c.cmd_expect("RCPT TO:<b@example.com>", 250)
                c.cmd_expect("DATA", 354)
                c.send(b"Subject: drain\r\nX-Test-Id: %d\r\n\r\n" % i
                       + b"x" * 5000 + b"\r\n")
                busy.append(c)
            idle = Client(srv.port)
            idle.expect(220)
            idle.ehlo()
            # Every session is open in some worker before the signal.
            self.assertTrue(wait_until(
                lambda: srv.count_log(r" connect ") >= 7, IO_TIMEOUT),
                srv.log_tail())
            srv.proc.send_signal(signal.SIGTERM)
            r = idle.reply()
            self.assertEqual((r.code, r.enhanced), (421, "4.3.2"))
            idle.close()
            self.assertIsNotNone(srv.wait_log(r" draining ", IO_TIMEOUT))
            # The listeners close: no new client gets in.
            self.assertTrue(wait_until(lambda: not is_listening(srv.port),
                                       IO_TIMEOUT))
            accepted, refused = set(), 0
            for i, c in enumerate(busy):
                c.send(b"more body\r\n.\r\n")
                r = c.reply()
                if r.code == 250:
                    accepted.add(i)
                    after = c.reply()
                    self.assertEqual((after.code, after.enhanced),
                                     (421, "4.3.2"))
                else:
                    self.assertEqual(r.code // 100, 4, r)
                    refused += 1
                c.close()
            self.assertEqual(srv.proc.wait(STOP_TIMEOUT + 30), 0)
            self.assertEqual(stored_ids(srv), accepted)
            self.assertEqual(len(accepted) + refused, 6)
            self.assertGreater(len(accepted), 0)  # the drain let them end

    def test_drain_timeout_then_421_and_second_signal(self):
        """A transaction that does not end within drain_timeout is closed
        with 421; nothing is stored for it. A second SIGTERM stops at
        once, even with drain_timeout far away."""
        with Server(plugins={"store": store_plugin()},
                    config={"workers": 2, "drain_timeout": 1}) as srv:
            self.assertIsNotNone(srv.wait_log(r"supervisor_ready", IO_TIMEOUT))
            c = Client(srv.port)
            c.expect(220)
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(b"Subject: slow\r\n\r\npart")
            srv.proc.send_signal(signal.SIGTERM)
            r = c.reply(timeout=IO_TIMEOUT)
            self.assertEqual(r.code, 421)
            c.close()
            self.assertEqual(srv.proc.wait(STOP_TIMEOUT), 0)
            self.assertEqual(srv.messages(), [])

        with Server(plugins={"store": store_plugin()},
                    config={"workers": 2, "drain_timeout": 3600}) as srv:
            self.assertIsNotNone(srv.wait_log(r"supervisor_ready", IO_TIMEOUT))
            c = Client(srv.port)
            c.expect(220)
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.cmd_expect("RCPT TO:<b@example.com>", 250)
            c.cmd_expect("DATA", 354)
            srv.proc.send_signal(signal.SIGTERM)
            self.assertIsNotNone(srv.wait_log(r" draining ", IO_TIMEOUT))
            srv.proc.send_signal(signal.SIGTERM)
            r = c.reply(timeout=IO_TIMEOUT)
            self.assertEqual(r.code, 421)
            c.close()
            self.assertEqual(srv.proc.wait(STOP_TIMEOUT), 0)


class ReloadTest(PosternTestCase):
    def run_source_with_reload(self, many):
        """smtp-source sends a steady load; SIGHUP comes once the first
        message is stored. Every message is stored, none is refused, and
        the reload is logged between the first and the last message."""
        n = 1500
        with Server(plugins={"store": store_plugin()},
                    config={"workers": 2}) as srv:
            self.assertIsNotNone(srv.wait_log(r"supervisor_ready", IO_TIMEOUT))
            flags = ["-d"] if many else []
            out = open(os.path.join(srv.tmp, "source.out"), "wb")
            src = subprocess.Popen(
                [SMTP_SOURCE] + flags + ["-s", "5", "-m", str(n), "-l", "2000",
                                         "-M", "client.test", "-f",
                                         "a@example.org", "-t",
                                         "b@example.com",
                                         "127.0.0.1:%d" % srv.port],
                stdout=out, stderr=subprocess.STDOUT)
            try:
                self.assertTrue(wait_until(
                    lambda: srv.count_log(r" accepted ") >= 20, 60),
                    srv.log_tail())
                srv.proc.send_signal(signal.SIGHUP)
                self.assertIsNotNone(srv.wait_log(r" reloaded ", 60),
                                     srv.log_tail())
                rc = src.wait(300)
            finally:
                if src.poll() is None:
                    src.kill()
                    src.wait()
                out.close()
            with open(os.path.join(srv.tmp, "source.out"), "rb") as f:
                output = f.read().decode("utf-8", "replace")
            self.assertEqual(rc, 0, output)
            self.assertEqual(len(srv.wait_messages(n, timeout=30)), n)
            events = [e for e, _ in log_events(srv)]
            accepted = [i for i, e in enumerate(events) if e == "accepted"]
            reloaded = events.index("reloaded")
            self.assertEqual(len(accepted), n)
            self.assertLess(accepted[0], reloaded)
            self.assertLess(reloaded, accepted[-1])
            self.assertEqual(srv.count_log(r" refused| tempfail "), 0)
            # Both generations received mail: the old until the new took
            # over (with -d, the old one's sessions run to the end).
            fields = log_events(srv)
            new = {f["worker"] for e, f in fields
                   if e == "worker_started" and f["generation"] == "2"}
            by_new = sum(1 for e, f in fields
                         if e == "accepted" and f["worker"] in new)
            self.assertGreater(n - by_new, 0)
            if not many:
                self.assertGreater(by_new, 0)
            self.assertEqual(stop_and_wait(srv), 0)

    def test_reload_under_load_one_message_per_connection(self):
        self.run_source_with_reload(many=False)

    def test_reload_under_load_many_messages_per_connection(self):
        self.run_source_with_reload(many=True)

    def test_broken_config_changes_nothing(self):
        """Bad JSON, then a module that refuses its config: reload_failed
        is logged naming the problem, the same workers go on serving."""
        with Server(plugins={"store": store_plugin()},
                    config={"workers": 2}) as srv:
            srv.worker_deaths_expected = True  # the new ones, on reload
            self.assertIsNotNone(srv.wait_log(r"supervisor_ready", IO_TIMEOUT))
            before = worker_pids(srv)
            self.assertEqual(len(before), 2)
            with open(srv.config_path) as f:
                good = f.read()

            with open(srv.config_path, "w") as f:
                f.write(good[:-5])
            srv.proc.send_signal(signal.SIGHUP)
            m = srv.wait_log(r"reload_failed .*postern\.json", IO_TIMEOUT)
            self.assertIsNotNone(m, srv.log_tail())
            self.assertEqual(worker_pids(srv), before)

            with open(srv.config_path, "w") as f:
                f.write(good)
            srv.write_plugin("50-bad", {"module": "store_file",
                                        "config": {"no_such_key": 1}})
            srv.proc.send_signal(signal.SIGHUP)
            self.assertTrue(wait_until(
                lambda: srv.count_log(r"reload_failed .*50-bad") == 1,
                IO_TIMEOUT), srv.log_tail())
            self.assertEqual(srv.count_log(r" reloaded "), 0)
            self.assertEqual(worker_pids(srv), before)

            # A config that passes the check but whose workers cannot
            # start (a spool under a regular file): the new workers fail,
            # the old ones serve on.
            os.unlink(os.path.join(srv.plugins_dir, "50-bad.json"))
            cfg = json.loads(good)
            cfg["spool_dir"] = os.path.join(srv.config_path, "spool")
            with open(srv.config_path, "w") as f:
                json.dump(cfg, f)
            srv.proc.send_signal(signal.SIGHUP)
            self.assertTrue(wait_until(
                lambda: srv.count_log(r"reload_failed .*spool_dir") == 1,
                IO_TIMEOUT), srv.log_tail())
            # the other new worker fails too, or retires: then only the
            # old ones are left
            self.assertTrue(wait_until(lambda: worker_pids(srv) == before,
                                       IO_TIMEOUT), srv.log_tail())
            self.assertEqual(srv.count_log(r" reloaded "), 0)
            with srv.client() as c:
                r = c.transaction("a@example.org", ["b@example.com"],
                                  b"Subject: still\r\n\r\nhere\r\n", ehlo=True)
                self.assertEqual(r.code, 250)
            self.assertEqual(len(srv.wait_messages(1)), 1)
            self.assertEqual(stop_and_wait(srv), 0)

    def test_good_reload_applies_to_new_connections(self):
        """A new plugins.d file rejecting a recipient takes effect after
        SIGHUP; a session opened before the reload keeps the old config
        until it ends, and the old workers then exit."""
        with Server(plugins={"50-store": store_plugin()},
                    config={"workers": 2}) as srv:
            self.assertIsNotNone(srv.wait_log(r"supervisor_ready", IO_TIMEOUT))
            before = worker_pids(srv)
            old = srv.client()
            old.ehlo()
            with open(os.path.join(srv.tmp, "recipients"), "w") as f:
                f.write("b@example.com\n")
            srv.write_plugin("10-rcpt", {"module": "rcpt_list",
                                         "config": {"file": "{tmp}/recipients"}})
            srv.proc.send_signal(signal.SIGHUP)
            self.assertIsNotNone(srv.wait_log(r" reloaded ", IO_TIMEOUT),
                                 srv.log_tail())
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                c.cmd_expect("RCPT TO:<b@example.com>", 250)
                r = c.cmd("RCPT TO:<nobody@example.com>")
                self.assertEqual(r.code // 100, 5, r)
            # The session from before the reload is served by an old
            # worker, still on the old config.
            old.cmd_expect("MAIL FROM:<a@example.org>", 250)
            old.cmd_expect("RCPT TO:<nobody@example.com>", 250)
            old.cmd_expect("QUIT", 221)
            old.close()
            self.assertTrue(wait_until(
                lambda: not any(pid_alive(p) for p in before), IO_TIMEOUT))
            after = worker_pids(srv)
            self.assertEqual(len(after), 2)
            self.assertFalse(set(after) & set(before))
            self.assertEqual(stop_and_wait(srv), 0)


class CrashTest(PosternTestCase):
    def test_killed_worker_is_restarted(self):
        with Server(plugins={"store": store_plugin()},
                    config={"workers": 2}) as srv:
            srv.worker_deaths_expected = True
            self.assertIsNotNone(srv.wait_log(r"supervisor_ready", IO_TIMEOUT))
            before = worker_pids(srv)
            # Each worker's lines name it; the supervisor's name the pid.
            self.assertTrue(wait_until(
                lambda: srv.count_log(r" started version=") == 2, IO_TIMEOUT))
            events = log_events(srv)
            spawned = {f["worker"]: int(f["pid"]) for e, f in events
                       if e == "worker_started"}
            self.assertEqual(sorted(spawned.values()), before)
            self.assertEqual(sorted(f["worker"] for e, f in events
                                    if e == "started"), sorted(spawned))
            os.kill(before[0], signal.SIGKILL)
            m = srv.wait_log(r"worker_died pid=%d .*signal=SIGKILL"
                             % before[0], IO_TIMEOUT)
            self.assertIsNotNone(m, srv.log_tail())
            self.assertTrue(wait_until(
                lambda: len(worker_pids(srv)) == 2
                and before[0] not in worker_pids(srv), IO_TIMEOUT))
            self.assertIn(before[1], worker_pids(srv))
            # A second quick death doubles the delay before the restart.
            again = [p for p in worker_pids(srv) if p not in before]
            os.kill(again[0], signal.SIGKILL)
            self.assertIsNotNone(srv.wait_log(
                r"worker_died pid=%d .*signal=SIGKILL" % again[0], IO_TIMEOUT))
            self.assertTrue(wait_until(lambda: len(worker_pids(srv)) == 2,
                                       IO_TIMEOUT), srv.log_tail())
            delays = [float(f["delay"]) for e, f in log_events(srv)
                      if e == "worker_restart"]
            self.assertEqual(len(delays), 2, srv.log_tail())
            self.assertLess(delays[0], delays[1])
            for i in range(6):
                with srv.client() as c:
                    r = c.transaction("a@example.org", ["b@example.com"],
                                      b"X-Test-Id: %d\r\n\r\nbody\r\n" % i,
                                      ehlo=True)
                    self.assertEqual(r.code, 250)
            self.assertEqual(stored_ids(srv), set(range(6)))
            self.assertEqual(stop_and_wait(srv), 0)

    def test_killed_supervisor_takes_its_workers(self):
        """SIGKILL the supervisor: its workers die with it and close the
        port, and a new postern started on the same port binds it and
        serves."""
        with Server(plugins={"store": store_plugin()},
                    config={"workers": 2}) as srv:
            self.assertIsNotNone(srv.wait_log(r"supervisor_ready", IO_TIMEOUT))
            workers = worker_pids(srv)
            self.assertEqual(len(workers), 2)
            srv.proc.kill()
            srv.proc.wait(STOP_TIMEOUT)
            srv.proc = None  # the harness would call SIGKILL a crash
            srv._log.close()
            srv._log = None
            # The orphaned workers close their copies of the socket as
            # they go (slowly under valgrind); until then the port would
            # answer for them, not for the new postern.
            self.assertTrue(wait_until(lambda: not is_listening(srv.port),
                                       STOP_TIMEOUT))
            listen = [{"address": "127.0.0.1", "port": srv.port,
                       "tls": "none"}]
            again = Server(plugins={"store": store_plugin()},
                           config={"workers": 2, "listen": listen},
                           start=False)
            again.port = srv.port
            with again:
                again.start()
                self.assertIsNotNone(again.wait_log(r"supervisor_ready",
                                                    IO_TIMEOUT))
                with Client(srv.port) as c:
                    c.expect(220)
                    r = c.transaction("a@example.org", ["b@example.com"],
                                      b"Subject: again\r\n\r\nhi\r\n",
                                      ehlo=True)
                    self.assertEqual(r.code, 250)
                self.assertEqual(len(again.wait_messages(1)), 1)
                self.assertEqual(srv.messages(), [])
                self.assertFalse(any(pid_alive(p) for p in workers))
                self.assertEqual(stop_and_wait(again), 0)


class SharedLimitsTest(PosternTestCase):
    def test_per_address_limit_holds_across_workers_and_a_dead_worker_frees_its_share(self):
        """connections_per_ip counts the connections of every worker; the
        ones a killed worker held stop counting, no more."""
        limit = 8
        with Server(plugins={"store": store_plugin()},
                    config={"workers": 2,
                            "limits": {"connections_per_ip": limit,
                                       "connection_rate": 0,
                                       "exempt_networks": []}}) as srv:
            srv.worker_deaths_expected = True
            self.assertIsNotNone(srv.wait_log(r"supervisor_ready", IO_TIMEOUT))
            workers = {f["worker"]: int(f["pid"])
                       for e, f in log_events(srv) if e == "worker_started"}
            clients = []
            try:
                # Fill the limit; the kernel spreads the accepts, so keep
                # going until both workers hold some (bounded).
                for _ in range(limit):
                    c = srv.client()
                    self.assertEqual(c.cmd("EHLO test.example").code, 250)
                    clients.append(c)
                held = {}
                for e, f in log_events(srv):
                    if e == "connect":
                        held[f["worker"]] = held.get(f["worker"], 0) + 1
                self.assertEqual(sum(held.values()), limit)
                # One more, whichever worker takes it, is over the limit.
                extra = srv.client(greet=False)
                line = extra.read_line()
                self.assertTrue(line.startswith("421 "), line)
                self.assertIn("(connections_per_ip)", line)
                extra.close()
                # Usually both workers hold some; the check below holds
                # either way.
                victim = min(held, key=lambda w: held[w])
                os.kill(workers[victim], signal.SIGKILL)
                self.assertIsNotNone(srv.wait_log(
                    r"worker_died pid=%d " % workers[victim], IO_TIMEOUT))
                # Exactly the victim's share is free again.
                freed = []
                for _ in range(held[victim] + 1):
                    c = srv.client(greet=False)
                    freed.append((c, c.read_line()))
                codes = [line[:3] for _, line in freed]
                self.assertEqual(codes, ["220"] * held[victim] + ["421"],
                                 srv.log_tail())
                for c, _ in freed:
                    c.close()
            finally:
                for c in clients:
                    c.close()
            self.assertEqual(stop_and_wait(srv), 0)


if __name__ == "__main__":
    main()
