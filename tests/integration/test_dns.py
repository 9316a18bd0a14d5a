"""DNS through a real server: postern's resolver (c-ares) against dnsmasq
on 127.0.0.1 (tests/integration/dns_server.py).

- the client's reverse name, forward-confirmed, in the stored Received
  header and for modules (postern_client_rdns); an unconfirmed PTR is not
  used; a server that never answers still lets the client be greeted;
- lookups from a module (tests/plugins/test_dns.c, answering in the RCPT
  reply): records of every type, NXDOMAIN apart from NODATA, temporary
  failures, the cache, cancellation;
- a client that vanishes while a module waits on a lookup: the lookup is
  abandoned, the module's callback gets CANCELLED and resumes, nothing
  leaks (the harness fails the test on any sanitizer or valgrind report).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dns_server import DnsServer, SilentServer, require_dnsmasq  # noqa: E402
from harness import (  # noqa: E402
    TIMER_GUARD,
    PosternTestCase,
    Server,
    main,
    store_plugin,
)

CLIENT = "127.0.0.1"
BODY = b"Subject: dns\r\n\r\nhello\r\n"

ZONE = [
    # the client, forward-confirmed
    (CLIENT, "PTR", "client.example.test"),
    ("client.example.test", "A", CLIENT),
    # SPF-like data
    ("example.test", "TXT", "v=spf1 -all"),
    ("example.test", "TXT", "second record"),
    ("split.example.test", "TXT", ["v=spf1 ", "ip4:192.0.2.0/24", " -all"]),
    ("example.test", "MX", (10, "mx1.example.test")),
    ("example.test", "MX", (20, "mx2.example.test")),
    ("mx1.example.test", "A", "192.0.2.10"),
    ("mx1.example.test", "AAAA", "2001:db8::10"),
    ("192.0.2.99", "PTR", "ninety-nine.example.test"),
]


def setUpModule():
    require_dnsmasq()


def dns_config(server, reverse=True, **extra):
    cfg = {"servers": [server], "reverse": reverse, "reverse_timeout": 5}
    cfg.update(extra)
    return {"dns": cfg}


def dns_plugin(timeout=5):
    return {"module": "test_dns", "config": {"timeout": timeout}}


class DnsTestCase(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_dns")

    def rcpt(self, srv, local, client=None):
        """The reply to RCPT TO:<local@example.com> in a fresh transaction."""
        own = client is None
        c = client or srv.client()
        try:
            if own:
                c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<%s@example.com>" % local)
            c.cmd_expect("RSET", 250)
            return r
        finally:
            if own:
                c.cmd("QUIT")
                c.close()

    def deliver(self, srv):
        with srv.client() as c:
            c.ehlo()
            r = c.transaction("a@example.org", ["bob@example.com"], BODY)
            self.assertEqual(r.code, 250, r)
            c.cmd("QUIT")
        msgs = srv.wait_messages(1)
        self.assertEqual(len(msgs), 1)
        with open(msgs[0], "rb") as f:
            return f.read()


class ReverseTest(DnsTestCase):
    def test_confirmed_name_in_received_and_for_modules(self):
        with DnsServer(ZONE) as dns, Server(
            plugins={"10-dns": dns_plugin(), "20-store": store_plugin()},
            config=dns_config(dns.server),
        ) as srv:
            data = self.deliver(srv)
            self.assertStoredBody(data, BODY, rcpt="bob@example.com",
                                  rdns="client.example.test")
            r = self.rcpt(srv, "rdns")
            self.assertEqual(r.code, 250, r)
            self.assertEqual(r.text, "2.1.5 rdns=client.example.test")
            self.assertIn(("PTR", "1.0.0.127.in-addr.arpa"), dns.queries())
            self.assertIn(("A", "client.example.test"), dns.queries())
            self.assertTrue(srv.wait_log(
                r"rdns client=127\.0\.0\.1 name=\"client\.example\.test\" "
                r"result=confirmed", timeout=TIMER_GUARD))

    def test_unconfirmed_ptr_is_not_used(self):
        zone = [
            (CLIENT, "PTR", "liar.example.test"),
            # the name exists, but not with the client's address
            ("liar.example.test", "A", "192.0.2.66"),
        ]
        with DnsServer(zone) as dns, Server(
            plugins={"10-dns": dns_plugin(), "20-store": store_plugin()},
            config=dns_config(dns.server),
        ) as srv:
            data = self.deliver(srv)
            self.assertStoredBody(data, BODY, rcpt="bob@example.com",
                                  rdns="unknown")
            self.assertEqual(self.rcpt(srv, "rdns").text, "2.1.5 rdns=(none)")
            self.assertIn(("A", "liar.example.test"), dns.queries())
            self.assertTrue(srv.wait_log(
                r"rdns client=127\.0\.0\.1 name=\"unknown\" "
                r"result=unconfirmed", timeout=TIMER_GUARD))

    def test_second_ptr_name_confirms(self):
        zone = [
            (CLIENT, "PTR", "nowhere.example.test"),
            (CLIENT, "PTR", "client.example.test"),
            ("client.example.test", "A", CLIENT),
        ]
        with DnsServer(zone) as dns, Server(
            plugins={"20-store": store_plugin()},
            config=dns_config(dns.server),
        ) as srv:
            data = self.deliver(srv)
            self.assertStoredBody(data, BODY, rcpt="bob@example.com",
                                  rdns="client.example.test")

    def test_silent_server_still_greets(self):
        with SilentServer() as silent, Server(
            plugins={"20-store": store_plugin()},
            config=dns_config(silent.server, reverse_timeout=0.5),
        ) as srv:
            data = self.deliver(srv)  # greeted, then served as usual
            self.assertStoredBody(data, BODY, rcpt="bob@example.com",
                                  rdns="unknown")
            self.assertTrue(srv.wait_log(
                r"rdns client=127\.0\.0\.1 name=\"unknown\" "
                r"result=(timeout|tempfail)", timeout=TIMER_GUARD))

    def test_reverse_off_asks_nothing(self):
        with DnsServer(ZONE) as dns, Server(
            plugins={"20-store": store_plugin()},
            config=dns_config(dns.server, reverse=False),
        ) as srv:
            data = self.deliver(srv)
            self.assertStoredBody(data, BODY, rcpt="bob@example.com")
            self.assertEqual(dns.queries(), [])


class LookupTest(DnsTestCase):
    def serve(self, dns, timeout=5, **extra):
        return Server(plugins={"10-dns": dns_plugin(timeout)},
                      config=dns_config(dns.server, reverse=False, **extra))

    def test_record_types_and_statuses(self):
        with DnsServer(ZONE) as dns, self.serve(dns) as srv, srv.client() as c:
            c.ehlo()

            def ask(local):
                r = self.rcpt(srv, local, client=c)
                self.assertEqual(r.code, 250, r)
                return r.text

            # TXT: each record's strings joined (RFC 7208 3.3)
            txt = ask("txt=split.example.test")
            self.assertRegex(txt, r"^2\.1\.5 dns status=ok ttl=\d+ n=1 ")
            self.assertTrue(txt.endswith(" v=spf1 ip4:192.0.2.0/24 -all"), txt)
            ttl = int(txt.split("ttl=")[1].split()[0])
            self.assertTrue(0 < ttl <= 300, txt)
            txt = ask("txt=example.test")
            self.assertIn("n=2 ", txt)
            self.assertIn("v=spf1 -all", txt)
            self.assertIn("second record", txt)
            mx = ask("mx=example.test")
            self.assertIn("n=2 ", mx)
            self.assertIn("10:mx1.example.test", mx)
            self.assertIn("20:mx2.example.test", mx)
            self.assertTrue(ask("a=mx1.example.test").endswith(" 192.0.2.10"))
            self.assertTrue(
                ask("aaaa=mx1.example.test").endswith(" 2001:db8::10"))
            self.assertTrue(ask("ptr=99.2.0.192.in-addr.arpa")
                            .endswith(" ninety-nine.example.test"))
            # a trailing dot and capitals ask for the same name
            self.assertTrue(
                ask('"a=MX1.Example.Test."').endswith(" 192.0.2.10"))
            # no such name, apart from a name without that type
            self.assertIn("dns status=nxdomain ", ask("a=none.example.test"))
            self.assertIn("dns status=nodata ", ask("aaaa=client.example.test"))
            self.assertIn("dns status=nodata ", ask("mx=mx1.example.test"))
            # the server refuses names outside its zones: c-ares 1.18 tries
            # the other servers, then reports that none could be asked,
            # a temporary failure (RFC 7208 4.4 makes it temperror too)
            self.assertIn("dns status=tempfail ", ask("a=elsewhere.invalid"))
            c.cmd("QUIT")

    def test_unanswered_lookup_is_a_temporary_failure(self):
        with SilentServer() as silent, Server(
            plugins={"10-dns": dns_plugin(timeout=0.5)},
            config=dns_config(silent.server, reverse=False),
        ) as srv:
            r = self.rcpt(srv, "txt=example.test")
            self.assertEqual(r.code, 250, r)
            self.assertIn("dns status=tempfail ", r.text)

    def test_answers_are_cached(self):
        # The cache is per worker process: one worker, so every lookup
        # meets the same cache.
        with DnsServer(ZONE) as dns, Server(
            plugins={"10-dns": dns_plugin(5)},
            config=dict(dns_config(dns.server, reverse=False), workers=1),
        ) as srv:
            for _ in range(3):
                self.assertIn("status=ok", self.rcpt(srv, "txt=example.test").text)
                self.assertIn("status=nxdomain",
                              self.rcpt(srv, "a=none.example.test").text)
            asked = dns.queries()
            self.assertEqual(asked.count(("TXT", "example.test")), 1, asked)
            self.assertEqual(asked.count(("A", "none.example.test")), 1, asked)

    def test_cache_off_asks_every_time(self):
        with DnsServer(ZONE) as dns, self.serve(dns, cache_entries=0) as srv:
            for _ in range(2):
                self.assertIn("status=ok", self.rcpt(srv, "txt=example.test").text)
            self.assertEqual(dns.queries().count(("TXT", "example.test")), 2)

    def test_cancelled_lookup_never_calls_back(self):
        with DnsServer(ZONE) as dns, self.serve(dns) as srv:
            r = self.rcpt(srv, "cancel=example.test")
            self.assertEqual(r.text, "2.1.5 cancelled")
            # a later lookup of the same name completes normally
            self.assertIn("status=ok", self.rcpt(srv, "txt=example.test").text)
            self.assertEqual(srv.count_log(r"callback of a cancelled lookup"), 0)

    def test_bad_name_does_not_start(self):
        with DnsServer(ZONE) as dns, self.serve(dns) as srv:
            r = self.rcpt(srv, '"txt=a..b"')
            self.assertEqual(r.code, 451, r)
            self.assertEqual(dns.queries(), [])


class DisconnectTest(DnsTestCase):
    def test_client_vanishes_mid_lookup(self):
        """The lookup waits on a server that never answers; the client
        resets the connection; the module's callback gets CANCELLED, it
        resumes its orphaned context, and postern serves the next client.
        Under ASan or valgrind, the harness fails on any report."""
        with SilentServer() as silent, Server(
            plugins={"10-dns": dns_plugin(timeout=120),
                     "20-store": store_plugin()},
            config=dns_config(silent.server, reverse=False),
        ) as srv:
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.send(b"RCPT TO:<txt=slow.example.test@example.com>\r\n")
            self.assertTrue(srv.wait_log(r"command line=\"RCPT TO:<txt=slow",
                                         timeout=TIMER_GUARD))
            c.abort()
            self.assertTrue(srv.wait_log(
                r"test_dns result name=\"slow\.example\.test\" "
                r"status=cancelled", timeout=TIMER_GUARD), srv.log_tail())
            self.assertTrue(srv.wait_log(r"test_dns orphaned",
                                         timeout=TIMER_GUARD))
            self.assertTrue(srv.wait_log(r"disconnect reason=io_error",
                                         timeout=TIMER_GUARD))
            # the daemon goes on
            data = self.deliver(srv)
            self.assertStoredBody(data, BODY, rcpt="bob@example.com")


if __name__ == "__main__":
    main()
