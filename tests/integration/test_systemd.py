"""postern under systemd's notify protocol, with a fake NOTIFY_SOCKET.

A unix datagram socket stands in for systemd (sd_notify(3)): the test
reads what postern sends and when, and who sent it (SO_PASSCRED gives the
sender's pid). Checked: READY=1 with MAINPID once every worker serves,
RELOADING=1 then READY=1 around a reload (a good one and a failing one),
STOPPING=1 on SIGTERM, WATCHDOG=1 pings only when WATCHDOG_USEC asks for
them and only from the supervisor.
"""

import os
import shutil
import signal
import socket
import struct
import tempfile
import time

import subprocess

from harness import (POSTERN_BIN, TIMER_GUARD, WRAPPER, Client,
                     PosternTestCase, Server, free_port, main, maildir_messages, store_plugin,
                     wait_until)

WORKERS = 2


class FakeSystemd:
    """The notify socket: messages as (sender pid, {field: value})."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="postern-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.messages = []

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _receive(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(
                4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        except socket.timeout:
            return None
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:12])[0]
        fields = dict(line.split("=", 1)
                      for line in data.decode().split("\n") if "=" in line)
        msg = (pid, fields)
        self.messages.append(msg)
        return msg

    def wait_for(self, key, timeout=TIMER_GUARD):
        """The next message carrying `key` (others are kept, skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self._receive(max(0.01, deadline - time.monotonic()))
            if msg and key in msg[1]:
                return msg
        raise AssertionError("no %s from postern within %.0f s; got %r"
                             % (key, timeout, self.messages))

    def drain(self, quiet=0.3):
        """Everything sent until `quiet` seconds pass without a message."""
        while self._receive(quiet):
            pass

    def states(self):
        """READY/RELOADING/STOPPING in the order they came."""
        out = []
        for _, fields in self.messages:
            for key in ("RELOADING", "STOPPING", "READY"):
                if fields.get(key) == "1":
                    out.append(key)
        return out


class NotifyEnv:
    """os.environ extended for the postern started in the block."""

    def __init__(self, **env):
        self.env = env
        self.saved = {}

    def __enter__(self):
        for k, v in self.env.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class SystemdNotifyTest(PosternTestCase):
    def setUp(self):
        self.systemd = FakeSystemd()
        self.addCleanup(self.systemd.close)

    def server(self, **env):
        with NotifyEnv(NOTIFY_SOCKET=self.systemd.path, **env):
            return Server(plugins={"90-store.json": store_plugin()},
                          config={"workers": WORKERS, "drain_timeout": 1}
                          ).__enter__()

    def stop(self, srv):
        srv.proc.send_signal(signal.SIGTERM)
        msg = self.systemd.wait_for("STOPPING")
        srv.proc.wait(TIMER_GUARD)
        self.assertEqual(srv.proc.returncode, 0, srv.log_tail())
        srv.__exit__(None, None, None)
        return msg

    def test_ready_reload_stop(self):
        srv = self.server()
        try:
            pid, ready = self.systemd.wait_for("READY")
            supervisor = srv.proc.pid
            self.assertEqual(ready.get("MAINPID"), str(supervisor))
            self.assertEqual(pid, supervisor)
            # READY only once every worker serves: the supervisor logs
            # supervisor_ready (after WORKERS workers said so) first.
            self.assertEqual(srv.count_log(r"supervisor_ready .*workers=%d"
                                           % WORKERS), 1, srv.log_tail())
            self.assertIn("serving", ready.get("STATUS", ""))
            with srv.smtplib() as s:
                s.ehlo("client.test")

            # a reload that works
            srv.proc.send_signal(signal.SIGHUP)
            _, reloading = self.systemd.wait_for("RELOADING")
            self.assertRegex(reloading.get("MONOTONIC_USEC", ""), r"^\d+$")
            usec = int(reloading["MONOTONIC_USEC"])
            # CLOCK_MONOTONIC, in microseconds: the same clock as ours
            self.assertLessEqual(usec, time.monotonic_ns() // 1000)
            _, again = self.systemd.wait_for("READY")
            self.assertIsNotNone(srv.wait_log(r" reloaded generation=2"),
                                 srv.log_tail())
            self.assertIn("generation 2", again.get("STATUS", ""))

            # a reload that fails: READY again, the old generation serves
            srv.write_plugin("10-broken.json", {"module": "no_such_module"})
            srv.proc.send_signal(signal.SIGHUP)
            self.systemd.wait_for("RELOADING")
            _, failed = self.systemd.wait_for("READY")
            self.assertIn("reload failed", failed.get("STATUS", ""))
            self.assertIn("no_such_module", failed.get("STATUS", ""))
            with srv.smtplib() as s:
                s.ehlo("client.test")

            _, stopping = self.stop(srv)
            self.assertIn("SIGTERM", stopping.get("STATUS", ""))
        except BaseException:
            srv.__exit__(None, None, None)
            raise
        self.assertEqual(self.systemd.states(),
                         ["READY", "RELOADING", "READY", "RELOADING", "READY",
                          "STOPPING"])
        senders = {pid for pid, _ in self.systemd.messages}
        self.assertEqual(senders, {supervisor})
        self.assertFalse([m for m in self.systemd.messages
                          if "WATCHDOG" in m[1]], "pings nobody asked for")

    def test_status_tells_of_a_worker_death(self):
        srv = self.server()
        srv.worker_deaths_expected = True
        try:
            self.systemd.wait_for("READY")
            m = srv.wait_log(r"worker_started pid=(\d+) worker=(\d+)")
            self.assertIsNotNone(m)
            os.kill(int(m.group(1)), signal.SIGKILL)
            for _ in range(20):
                _, msg = self.systemd.wait_for("STATUS")
                if "died" in msg["STATUS"]:
                    break
            self.assertIn("worker %s died (signal=SIGKILL)" % m.group(2),
                          msg["STATUS"])
            self.assertNotIn("READY", msg)  # still ready: the others serve
            self.stop(srv)
        except BaseException:
            srv.__exit__(None, None, None)
            raise

    def test_watchdog_pings_from_the_supervisor(self):
        srv = self.server(WATCHDOG_USEC="200000")
        try:
            self.systemd.wait_for("READY")
            for _ in range(4):
                pid, _ = self.systemd.wait_for("WATCHDOG")
                self.assertEqual(pid, srv.proc.pid)
            # they go on while the supervisor drains its workers
            self.stop(srv)
        except BaseException:
            srv.__exit__(None, None, None)
            raise
        pings = [m for m in self.systemd.messages if "WATCHDOG" in m[1]]
        self.assertTrue(all(m[1]["WATCHDOG"] == "1" for m in pings), pings)

    def test_watchdog_for_another_pid_is_not_ours(self):
        # WATCHDOG_PID names the process systemd watches: not postern
        # (pid 1 here), so no pings, from the supervisor or a worker.
        srv = self.server(WATCHDOG_USEC="100000", WATCHDOG_PID="1")
        try:
            self.systemd.wait_for("READY")
            self.systemd.drain(quiet=1.0)
            self.stop(srv)
        except BaseException:
            srv.__exit__(None, None, None)
            raise
        self.assertFalse([m for m in self.systemd.messages
                          if "WATCHDOG" in m[1]])

    def test_without_notify_socket_nothing_changes(self):
        # the same daemon, run from a terminal: no socket, no messages
        saved = os.environ.pop("NOTIFY_SOCKET", None)
        try:
            with Server(plugins={"90-store.json": store_plugin()}) as srv:
                self.assertIsNotNone(srv.wait_log(r"supervisor_ready"))
                srv.proc.send_signal(signal.SIGHUP)
                self.assertIsNotNone(srv.wait_log(r" reloaded "))
        finally:
            if saved is not None:
                os.environ["NOTIFY_SOCKET"] = saved
        self.systemd.drain(quiet=0.5)
        self.assertEqual(self.systemd.messages, [])


class SocketActivationTest(PosternTestCase):
    """Sockets systemd bound (postern.socket) reach postern as fd 3, 4,
    ... with LISTEN_FDS and LISTEN_PID, here from a shell that execs it."""

    def test_inherited_socket_serves_the_connections_queued_before(self):
        srv = Server(plugins={"90-store.json": store_plugin()}, start=False)
        with srv:
            listening = socket.socket()
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind(("127.0.0.1", srv.port))
            listening.listen(16)
            # a socket of another port, which no listener names
            stray = socket.socket()
            stray.bind(("127.0.0.1", free_port()))
            stray.listen(1)
            # connected while nothing runs: queued in the kernel
            early = Client(srv.port)
            script = ('exec 3<&%d 4<&%d; LISTEN_PID=$$ LISTEN_FDS=2 '
                      'exec "$@"' % (listening.fileno(), stray.fileno()))
            srv._log = open(srv.log_path, "wb")
            srv.proc = subprocess.Popen(
                ["sh", "-c", script, "sh"] + WRAPPER + [POSTERN_BIN, "-c",
                                                       srv.config_path],
                pass_fds=(listening.fileno(), stray.fileno()),
                stdin=subprocess.DEVNULL, stdout=srv._log,
                stderr=subprocess.STDOUT, cwd=srv.tmp)
            listening.close()
            stray.close()
            with early:
                early.expect(220, timeout=TIMER_GUARD)
                r = early.transaction("a@example.org", ["b@example.com"],
                                      b"Subject: early\r\n\r\nqueued\r\n",
                                      ehlo=True)
                self.assertEqual(r.code, 250, r)
            self.assertTrue(wait_until(lambda: srv.messages(), TIMER_GUARD))
            self.assertEqual(srv.count_log(
                r'listening address="127\.0\.0\.1" port=%d inherited=1'
                % srv.port), 1, srv.log_tail())
            self.assertEqual(srv.count_log(r"inherited_socket_unused fd=4"),
                             1, srv.log_tail())
            # a reload keeps the inherited socket
            srv.proc.send_signal(signal.SIGHUP)
            self.assertIsNotNone(srv.wait_log(r" reloaded generation=2"))
            with srv.client() as c:
                c.ehlo()


if __name__ == "__main__":
    main()
