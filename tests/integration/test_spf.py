"""The spf module through real SMTP sessions, with its DNS from a real
server (dnsmasq on 127.0.0.1, tests/integration/dns_server.py):

- pass: the message is stored with Received-SPF and Authentication-Results;
- fail: MAIL is rejected with 550 5.7.23 and the domain's explanation;
- softfail: continues by default (the headers say softfail), or 451 4.7.23
  when configured to tempfail;
- acting at RCPT instead of MAIL;
- temperror: a server that never answers gives 451 4.7.24;
- a client that leaves while the lookup is in flight: the server goes on,
  nothing leaks (the harness fails the test on any sanitizer report).

The client connects from 127.0.0.1; the default EHLO name client.test has
no SPF record (its HELO check is none).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dns_server import DnsServer, SilentServer  # noqa: E402
from harness import (  # noqa: E402
    PosternTestCase,
    Server,
    main,
    split_added_headers,
    store_plugin,
    wait_until,
)

BODY = b"Subject: spf\r\n\r\nhello\r\n"
AUTHSERV = "mx.postern.test"

ZONE = [
    ("pass.test", "TXT", "v=spf1 ip4:192.0.2.0/24 include:inc.test -all"),
    ("inc.test", "TXT", "v=spf1 a:relay.inc.test -all"),
    ("relay.inc.test", "A", "127.0.0.1"),
    ("fail.test", "TXT", "v=spf1 mx -all exp=why.fail.test"),
    ("fail.test", "MX", (10, "mx.fail.test")),
    ("mx.fail.test", "A", "192.0.2.25"),
    ("why.fail.test", "TXT", "%{i} may not send mail for %{d}"),
    ("soft.test", "TXT", ["v=spf1 ", "~all"]),
]


def spf_plugin(**config):
    cfg = {"authserv_id": AUTHSERV}
    cfg.update(config)
    return {"module": "spf", "config": cfg}


def dns_config(server):
    return {"dns": {"servers": [server], "reverse": False}}


class SpfTest(PosternTestCase):
    def serve(self, dns_server, **spf):
        return Server(
            plugins={"10-spf": spf_plugin(**spf), "90-store": store_plugin()},
            config=dns_config(dns_server),
        )

    def stored_headers(self, srv, sender):
        with srv.client() as c:
            c.ehlo()
            r = c.transaction(sender, ["bob@example.com"], BODY)
            self.assertEqual(r.code, 250, r)
            c.cmd("QUIT")
        msgs = srv.wait_messages(1)
        self.assertEqual(len(msgs), 1)
        with open(msgs[0], "rb") as f:
            headers = split_added_headers(f.read(), BODY)
        return {h.split(":", 1)[0]: h.split(":", 1)[1].strip() for h in headers}

    def mail_reply(self, srv, sender):
        with srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<%s>" % sender)
            c.cmd("QUIT")
            return r

    def test_pass_adds_headers(self):
        with DnsServer(ZONE) as dns, self.serve(dns.server) as srv:
            h = self.stored_headers(srv, "alice@pass.test")
            rs = h["Received-SPF"]
            self.assertTrue(rs.startswith("pass (%s: domain of pass.test "
                                          "designates 127.0.0.1)" % AUTHSERV),
                            rs)
            for part in ("client-ip=127.0.0.1;",
                         'envelope-from="alice@pass.test";',
                         'helo="client.test";', "identity=mailfrom;",
                         'mechanism="include:inc.test"',
                         "receiver=%s;" % AUTHSERV):
                self.assertIn(part, rs)
            self.assertEqual(h["Authentication-Results"],
                             "%s; spf=pass smtp.mailfrom=alice@pass.test; "
                             "spf=none smtp.helo=client.test" % AUTHSERV)
            self.assertIn(("TXT", "inc.test"), dns.queries())
            self.assertIn(("A", "relay.inc.test"), dns.queries())

    def test_fail_rejects_with_explanation(self):
        with DnsServer(ZONE) as dns, self.serve(dns.server) as srv:
            r = self.mail_reply(srv, "mallory@fail.test")
            self.assertEqual(r.code, 550, r)
            self.assertEqual(r.enhanced, "5.7.23", r)
            self.assertIn("127.0.0.1 may not send mail for fail.test", r.text)
            self.assertIn(("MX", "fail.test"), dns.queries())
            self.assertTrue(srv.wait_log(r"result=fail identity=mailfrom "
                                         r"domain=\"fail\.test\""))

    def test_softfail_continues_or_tempfails(self):
        with DnsServer(ZONE) as dns:
            with self.serve(dns.server) as srv:
                h = self.stored_headers(srv, "sam@soft.test")
                self.assertTrue(h["Received-SPF"].startswith("softfail "))
                self.assertIn("spf=softfail smtp.mailfrom=sam@soft.test",
                              h["Authentication-Results"])
            with self.serve(dns.server,
                            actions={"softfail": "tempfail"}) as srv:
                r = self.mail_reply(srv, "sam@soft.test")
                self.assertEqual(r.code, 451, r)
                self.assertEqual(r.enhanced, "4.7.23", r)

    def test_act_at_rcpt(self):
        with DnsServer(ZONE) as dns, self.serve(dns.server,
                                                hook="rcpt") as srv:
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<mallory@fail.test>", 250)
                r = c.cmd("RCPT TO:<bob@example.com>")
                self.assertEqual(r.code, 550, r)
                self.assertEqual(r.enhanced, "5.7.23", r)
                c.cmd("QUIT")

    def test_unreachable_server_tempfails(self):
        with SilentServer() as silent, self.serve(silent.server,
                                                  dns_timeout=1) as srv:
            r = self.mail_reply(srv, "alice@pass.test")
            self.assertEqual(r.code, 451, r)
            self.assertEqual(r.enhanced, "4.7.24", r)

    def test_client_leaves_mid_lookup(self):
        with SilentServer() as silent, self.serve(silent.server,
                                                  dns_timeout=5) as srv:
            for _ in range(3):
                c = srv.client()
                c.ehlo()
                c.send(b"MAIL FROM:<alice@pass.test>\r\n")
                time.sleep(0.2)  # the lookup is in flight
                c.abort()
            # each check was abandoned and resumed, so each session ended
            self.assertTrue(wait_until(
                lambda: srv.count_log(r"check abandoned") >= 3, 10),
                srv.log_tail())
            with srv.client() as c:  # still serving
                c.ehlo()
                c.cmd("QUIT")
            self.assertTrue(srv.alive)


if __name__ == "__main__":
    main()
