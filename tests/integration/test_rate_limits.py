"""Rate limits per client address (limits.connection_rate, message_rate,
auth_failure_rate) and the names of the connection limits in their
replies. Loopback is exempt by default, so every server here has
`exempt_networks: []`.

The counts live in memory shared by every worker process, so nothing here
depends on which worker takes a connection: these tests hold with any
`workers` count."""

import base64
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    POSTERN_BIN,
    Client,
    PosternTestCase,
    Server,
    main,
    store_plugin,
    wait_until,
)

STORE = {"20-store": store_plugin(envelope=True)}
PASSWORD = "right-password"


def limited(plugins=None, **limits):
    limits.setdefault("exempt_networks", [])
    return Server(plugins=plugins or STORE, config={"limits": limits})


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


class RateLimitsTest(PosternTestCase):
    def assertNamesLimit(self, reply, code, enhanced, key):
        self.assertEqual((reply.code, reply.enhanced), (code, enhanced), reply)
        self.assertIn("(%s)" % key, reply.text, reply)

    def test_connection_rate_burst(self):
        """A burst of N new connections is let in, the next one is told
        421 naming connection_rate, and closed. The refill is slow enough
        (one per 1000 s) that timing cannot matter."""
        burst = 4
        with limited(connection_rate=0.001,
                     connection_rate_burst=burst) as srv:
            for _ in range(burst):
                with Client(srv.port) as c:
                    self.assertEqual(c.reply().code, 220)
                    c.cmd_expect("QUIT", 221)
            with Client(srv.port) as c:
                self.assertNamesLimit(c.reply(), 421, "4.7.0",
                                      "connection_rate")
                self.assertTrue(c.wait_closed())
            # refused attempts take nothing, but none has come back either
            with Client(srv.port) as c:
                self.assertNamesLimit(c.reply(), 421, "4.7.0",
                                      "connection_rate")
            self.assertTrue(wait_until(
                lambda: "limit=connection_rate" in srv.log_text(), 5.0))
            self.assertTrue(srv.alive)

    def test_connection_rate_counts_per_address(self):
        """Connections held open use the burst as well: the rate counts
        new connections, not closes, and a client under it is not hurt."""
        with limited(connection_rate=0.001, connection_rate_burst=3) as srv:
            clients = [srv.client() for _ in range(3)]
            with Client(srv.port) as extra:
                self.assertNamesLimit(extra.reply(), 421, "4.7.0",
                                      "connection_rate")
            for c in clients:
                self.assertEqual(c.cmd("NOOP").code, 250)
                c.close()

    def test_connection_rate_zero_is_off(self):
        with limited(connection_rate=0, connection_rate_burst=1) as srv:
            for _ in range(5):
                with Client(srv.port) as c:
                    self.assertEqual(c.reply().code, 220)
                    c.cmd_expect("QUIT", 221)

    def test_message_rate_across_sessions(self):
        """message_rate counts MAIL commands per address across sessions:
        two messages in the first session, the MAIL of the second session
        is told 450 naming message_rate; the session goes on."""
        with limited(message_rate=2) as srv:
            with srv.client() as c:
                c.ehlo()
                for i in range(2):
                    r = c.transaction("a@example.org", ["b@example.com"],
                                      b"Subject: %d\r\n\r\nhi\r\n" % i)
                    self.assertEqual(r.code, 250, r)
                c.cmd_expect("QUIT", 221)
            with srv.client() as c:
                c.ehlo()
                self.assertNamesLimit(c.cmd("MAIL FROM:<a@example.org>"), 450,
                                      "4.7.1", "message_rate")
                # no transaction was started
                self.assertEqual(c.cmd("RCPT TO:<b@example.com>").code, 503)
                self.assertEqual(c.cmd("NOOP").code, 250)
                c.cmd_expect("QUIT", 221)
            self.assertEqual(len(srv.wait_messages(2)), 2)
            self.assertEqual(len(srv.messages()), 2)

    def test_connection_limits_name_their_key(self):
        with limited(connections_per_ip=1) as srv:
            first = srv.client()
            with Client(srv.port) as c:
                self.assertNamesLimit(c.reply(), 421, "4.7.0",
                                      "connections_per_ip")
            first.close()
        with limited(connections=1) as srv:
            first = srv.client()
            with Client(srv.port) as c:
                self.assertNamesLimit(c.reply(), 421, "4.7.0", "connections")
            first.close()


class AuthFailureRateTest(PosternTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        r = subprocess.run([POSTERN_BIN, "hash-password", "sha512crypt"],
                           input=PASSWORD.encode() + b"\n",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30, check=True)
        cls.users_line = "alice:" + r.stdout.decode("ascii").strip() + "\n"

    def server(self, **limits):
        srv = limited(plugins=dict(STORE), **limits)
        users = os.path.join(srv.tmp, "users")
        with open(users, "w") as f:
            f.write(self.users_line)
        srv.write_plugin("10-auth", {"module": "auth_file",
                                     "config": {"file": users}})
        srv.config["listen"][0]["auth_plaintext"] = True
        with open(srv.config_path, "w") as f:
            json.dump(srv.config, f, indent=2)
        return srv

    def fail_once(self, srv):
        with srv.client() as c:
            c.ehlo()
            r = c.cmd("AUTH PLAIN " + plain("alice", "wrong"))
            self.assertEqual((r.code, r.enhanced), (535, "5.7.8"), r)
            c.cmd_expect("QUIT", 221)

    def test_failures_across_sessions(self):
        """auth_failure_rate 2: one failure in each of two sessions; the
        third session's AUTH, even with the right password, is told 421
        naming auth_failure_rate and the session ends."""
        with self.server(auth_failure_rate=2) as srv:
            self.fail_once(srv)
            self.fail_once(srv)
            with srv.client() as c:
                c.ehlo()
                r = c.cmd("AUTH PLAIN " + plain("alice", PASSWORD))
                self.assertNamesLimit(r, 421, "4.7.0", "auth_failure_rate")
                self.assertTrue(c.wait_closed())
            self.assertTrue(wait_until(
                lambda: "limit=auth_failure_rate" in srv.log_text(), 5.0))

    def test_under_the_rate_auth_works(self):
        """One failure under a rate of 2 leaves AUTH working: the limit is
        what refuses, not the failure."""
        with self.server(auth_failure_rate=2) as srv:
            self.fail_once(srv)
            with srv.client() as c:
                c.ehlo()
                r = c.cmd("AUTH PLAIN " + plain("alice", PASSWORD))
                self.assertEqual((r.code, r.enhanced), (235, "2.7.0"), r)

    def assertNamesLimit(self, reply, code, enhanced, key):
        RateLimitsTest.assertNamesLimit(self, reply, code, enhanced, key)


if __name__ == "__main__":
    main()
