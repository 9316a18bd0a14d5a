"""The dnsbl module through real SMTP sessions, with its DNS from a real
server (dnsmasq on 127.0.0.1, tests/integration/dns_server.py):

- the client (127.0.0.1) listed in bl.test is rejected at RCPT with
  554 5.7.1 naming the zone; postmaster is still accepted;
- a zone that does not list it lets the mail through;
- weights and a threshold over two lists;
- a client in `allow`, in relay_networks, or authenticated passes
  without a lookup;
- a server that never answers: "continue" by default, 451 4.7.1 with
  "on_error": "tempfail";
- a client that leaves while RCPT waits for the lookups: the server goes
  on, nothing leaks (the harness fails the test on any sanitizer report).
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dns_server import DnsServer, SilentServer, require_dnsmasq  # noqa: E402
from harness import (  # noqa: E402
    POSTERN_BIN,
    PosternTestCase,
    Server,
    main,
    store_plugin,
    wait_until,
)

BODY = b"Subject: dnsbl\r\n\r\nhello\r\n"
CLIENT_REV = "1.0.0.127"  # 127.0.0.1 reversed

ZONE = [
    (CLIENT_REV + ".bl.test", "A", "127.0.0.2"),
    (CLIENT_REV + ".w1.test", "A", "127.0.0.2"),
    (CLIENT_REV + ".w2.test", "A", "127.0.0.10"),
    # listed, but with a code the configuration does not count
    (CLIENT_REV + ".codes.test", "A", "127.0.0.3"),
]


def setUpModule():
    require_dnsmasq()


def dnsbl_plugin(lists, **config):
    cfg = {"lists": [z if isinstance(z, dict) else {"zone": z}
                     for z in lists]}
    cfg.update(config)
    return {"module": "dnsbl", "config": cfg}


def dns_config(server):
    return {"dns": {"servers": [server], "reverse": False}}


class DnsblTest(PosternTestCase):
    def serve(self, dns_server, lists, config=None, start=True, **dnsbl):
        main_config = dns_config(dns_server)
        main_config.update(config or {})
        return Server(
            plugins={"10-dnsbl": dnsbl_plugin(lists, **dnsbl),
                     "90-store": store_plugin()},
            config=main_config, start=start,
        )

    def rcpt_reply(self, srv, rcpt="bob@example.com"):
        with srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
            r = c.cmd("RCPT TO:<%s>" % rcpt)
            c.cmd("QUIT")
            return r

    def delivered(self, srv):
        with srv.client() as c:
            c.ehlo()
            r = c.transaction("alice@example.org", ["bob@example.com"], BODY)
            self.assertEqual(r.code, 250, r)
            c.cmd("QUIT")
        self.assertEqual(len(srv.wait_messages(1)), 1)

    def test_listed_rejected_postmaster_accepted(self):
        with DnsServer(ZONE) as dns, self.serve(dns.server,
                                                ["bl.test"]) as srv:
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                r = c.cmd("RCPT TO:<bob@example.com>")
                self.assertEqual(r.code, 554, r)
                self.assertEqual(r.enhanced, "5.7.1", r)
                self.assertIn("Client host [127.0.0.1] blocked using bl.test",
                              r.text)
                # the blocked sender can still reach postmaster
                self.assertEqual(c.cmd("RCPT TO:<postmaster@example.com>").code,
                                 250)
                self.assertEqual(c.cmd("RCPT TO:<Postmaster>").code, 250)
                c.cmd_expect("DATA", 354)
                c.send(BODY + b".\r\n")
                self.assertEqual(c.reply().code, 250)
                c.cmd("QUIT")
            self.assertEqual(len(srv.wait_messages(1)), 1)
            self.assertEqual(dns.queries().count(("A", CLIENT_REV + ".bl.test")),
                             1)
            self.assertTrue(srv.wait_log(r'client="127\.0\.0\.1" '
                                         r'listed="bl\.test" score=1 '
                                         r'threshold=1 .*action=reject'),
                            srv.log_tail())

    def test_unlisted_zone_passes(self):
        with DnsServer(ZONE) as dns, self.serve(dns.server,
                                                ["clean.test"]) as srv:
            self.delivered(srv)
            self.assertIn(("A", CLIENT_REV + ".clean.test"), dns.queries())

    def test_codes(self):
        lists = [{"zone": "codes.test", "codes": ["127.0.0.2",
                                                  "127.0.0.4/30"]}]
        with DnsServer(ZONE) as dns, self.serve(dns.server, lists) as srv:
            self.delivered(srv)
            self.assertIn(("A", CLIENT_REV + ".codes.test"), dns.queries())

    def test_weights_and_threshold(self):
        with DnsServer(ZONE) as dns:
            with self.serve(dns.server, ["w1.test", "clean.test"],
                            threshold=2) as srv:
                self.delivered(srv)
            with self.serve(dns.server, ["w1.test", "clean.test",
                                         {"zone": "w2.test", "weight": 1}],
                            threshold=2) as srv:
                r = self.rcpt_reply(srv)
                self.assertEqual(r.code, 554, r)
                self.assertIn("blocked using w1.test, w2.test", r.text)

    def assertNoLookup(self, dns):
        self.assertEqual([q for q in dns.queries() if q[1].endswith(".test")],
                         [])

    def test_allowed_client_passes(self):
        with DnsServer(ZONE) as dns, self.serve(
                dns.server, ["bl.test"], allow=["192.0.2.0/24",
                                                "127.0.0.0/8"]) as srv:
            self.delivered(srv)
            self.assertNoLookup(dns)

    def test_relay_networks_client_passes(self):
        with DnsServer(ZONE) as dns, self.serve(
                dns.server, ["bl.test"],
                config={"relay_networks": ["127.0.0.1"]}) as srv:
            self.delivered(srv)
            self.assertNoLookup(dns)

    def test_authenticated_client_passes(self):
        r = subprocess.run([POSTERN_BIN, "hash-password", "sha512crypt"],
                           input=b"secret\n", stdout=subprocess.PIPE,
                           timeout=30, check=True)
        with DnsServer(ZONE) as dns:
            srv = self.serve(dns.server, ["bl.test"], start=False)
            users = os.path.join(srv.tmp, "users")
            with open(users, "w") as f:
                f.write("alice:%s\n" % r.stdout.decode("ascii").strip())
            srv.write_plugin("20-auth", {"module": "auth_file",
                                         "config": {"file": users}})
            srv.config["listen"][0]["auth_plaintext"] = True
            with open(srv.config_path, "w") as f:
                json.dump(srv.config, f)
            with srv:
                srv.start()
                with srv.client() as c:
                    c.ehlo()
                    c.cmd_expect("AUTH PLAIN AGFsaWNlAHNlY3JldA==", 235)
                    c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                    c.cmd_expect("RCPT TO:<bob@example.net>", 250)
                    c.cmd("QUIT")
                # without AUTH the same client is blocked
                self.assertEqual(self.rcpt_reply(srv).code, 554)

    def test_silent_server(self):
        with SilentServer() as silent:
            with self.serve(silent.server, ["bl.test"], timeout=1) as srv:
                self.delivered(srv)
                self.assertTrue(srv.wait_log(r'listed=- failed="bl\.test" '
                                             r'action=none'), srv.log_tail())
            with self.serve(silent.server, ["bl.test"], timeout=1,
                            on_error="tempfail") as srv:
                r = self.rcpt_reply(srv)
                self.assertEqual(r.code, 451, r)
                self.assertEqual(r.enhanced, "4.7.1", r)
                self.assertIn("could not be checked against bl.test", r.text)

    def test_client_leaves_mid_lookup(self):
        with SilentServer() as silent, self.serve(silent.server, ["bl.test"],
                                                  timeout=30) as srv:
            for i in range(3):
                c = srv.client()
                c.ehlo()
                c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                c.send(b"RCPT TO:<bob@example.com>\r\n")
                # RCPT waits on the lookup in flight
                self.assertTrue(wait_until(
                    lambda: srv.count_log(r"waiting hook=rcpt lookups=1")
                    > i, 10), srv.log_tail())
                c.abort()
            # each wait was abandoned and resumed, so each session ended
            self.assertTrue(wait_until(
                lambda: srv.count_log(r"check abandoned") >= 3, 10),
                srv.log_tail())
            self.assertTrue(wait_until(
                lambda: srv.count_log(r"disconnect") >= 3, 10),
                srv.log_tail())
            with srv.client() as c:  # still serving
                c.ehlo()
                c.cmd("QUIT")
            self.assertTrue(srv.alive)


if __name__ == "__main__":
    main()
