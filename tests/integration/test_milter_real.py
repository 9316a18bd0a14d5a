"""The milter module against real Debian milters, started by the tests
(tests/integration/real_milters.py: foreground children on 127.0.0.1, in
temp dirs, no system service, no network):

- OpenDKIM signs: a postern with the milter module pointed at an OpenDKIM
  signer (Mode s, a key made by opendkim-genkey for example.test) stores
  a message from example.test with a DKIM-Signature (d=example.test,
  s=the selector) at the top of its header section; every message of a
  connection is signed; mail from another domain is not;
- the signature is real: that stored message sent through a second
  postern whose milter is an OpenDKIM verifier (Mode v, the public key in
  DNS served by dns_server.py's dnsmasq) is stored with
  "Authentication-Results: verifier.test; dkim=pass"; the same message
  with one body byte changed gets dkim=fail, so the check can fail;
- rspamd (Debian's rules, its proxy worker in milter mode, scanning by
  itself) rejects the GTUBE test message at the end of data with its own
  reply, "554 5.7.1 Gtube pattern", and nothing is stored; a clean
  message is scanned (rspamd's log says so) and stored.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dns_server import DnsServer, require_dnsmasq  # noqa: E402
from harness import (  # noqa: E402
    PosternTestCase,
    Server,
    main,
    read_bytes,
    store_plugin,
)
from real_milters import (  # noqa: E402
    GTUBE,
    RSPAMD_DNS_ZONES,
    DkimKey,
    OpenDkimSigner,
    OpenDkimVerifier,
    Rspamd,
    require_real_milters,
)

SENDER = "alice@example.test"
RCPT = "bob@example.com"


def message(n=1, sender_domain="example.test", body=b"hello\r\n"):
    return (b"From: Alice <alice@%s>\r\n"
            b"To: Bob <bob@example.com>\r\n"
            b"Subject: real milter %d\r\n"
            b"Date: Tue, 01 Dec 2026 00:00:00 +0000\r\n"
            b"Message-ID: <%d.real@%s>\r\n"
            b"\r\n" % (sender_domain.encode(), n, n, sender_domain.encode())
            + body)


def milter_plugin(daemon, **config):
    cfg = {"socket": daemon.socket, "default_action": "tempfail"}
    cfg.update(config)
    return {"module": "milter", "config": cfg}


def header_fields(data):
    """The unfolded fields of a stored message's header section, in
    order, as (lower-case name, value)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    fields = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t"):
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip())
        else:
            name, value = line.split(":", 1)
            fields.append((name.lower(), value.strip()))
    return fields


def setUpModule():
    require_real_milters("opendkim", "opendkim-genkey", "rspamd")
    require_dnsmasq()


class RealMilterCase(PosternTestCase):
    def send(self, srv, messages, sender=SENDER):
        """Messages in one session; the replies to their end of data."""
        replies = []
        with srv.client() as c:
            c.ehlo()
            for data in messages:
                replies.append(c.transaction(sender, [RCPT], data))
            c.cmd("QUIT")
        return replies

    def stored(self, srv, n):
        msgs = srv.wait_messages(n, timeout=30)
        self.assertEqual(len(msgs), n, srv.log_tail())
        return [read_bytes(p) for p in msgs]


class OpenDkimTest(RealMilterCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.daemons = []
        cls.dns = None
        cls.key = DkimKey("example.test", "sel1")
        try:
            cls.signer = cls._start(OpenDkimSigner(cls.key))
            cls.dns = DnsServer([cls.key.dns_record()])
            cls.verifier = cls._start(OpenDkimVerifier(cls.dns.port))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _start(cls, daemon):
        cls.daemons.append(daemon)
        return daemon.start()

    @classmethod
    def tearDownClass(cls):
        for d in cls.daemons:
            d.cleanup()
        if cls.dns:
            cls.dns.cleanup()
        cls.key.cleanup()

    def signing_server(self):
        return Server(plugins={"50-milter": milter_plugin(self.signer),
                               "90-store": store_plugin()})

    def verifying_server(self):
        return Server(plugins={"50-milter": milter_plugin(self.verifier),
                               "90-store": store_plugin()})

    def sign(self, messages):
        with self.signing_server() as srv:
            replies = self.send(srv, messages)
            self.assertEqual([r.code for r in replies], [250] * len(messages),
                             replies)
            return self.stored(srv, len(messages))

    def verify(self, data):
        """The Authentication-Results the verifier's postern stored."""
        with self.verifying_server() as srv:
            self.assertEqual(self.send(srv, [data])[0].code, 250)
            stored = self.stored(srv, 1)[0]
        results = [v for n, v in header_fields(stored)
                   if n == "authentication-results"]
        self.assertEqual(len(results), 1, stored[:2000])
        self.assertTrue(results[0].startswith("verifier.test;"), results)
        return results[0]

    def signature(self, data):
        sigs = [v for n, v in header_fields(data) if n == "dkim-signature"]
        self.assertEqual(len(sigs), 1, data[:2000])
        tags = dict(t.strip().split("=", 1) for t in sigs[0].split(";")
                    if "=" in t)
        return tags

    def test_signed_and_verified(self):
        signed = self.sign([message()])[0]
        # OpenDKIM inserts at index 0: above postern's Received line
        self.assertEqual(header_fields(signed)[0][0], "dkim-signature")
        self.assertEqual(header_fields(signed)[1][0], "received")
        tags = self.signature(signed)
        self.assertEqual(tags["d"], "example.test")
        self.assertEqual(tags["s"], "sel1")
        self.assertIn("from", tags["h"].lower().split(":"))
        # folded lines of the stored field end in CRLF, none bare
        self.assertNotRegex(signed, rb"[^\r]\n")
        self.assertTrue(signed.endswith(b"\r\n\r\nhello\r\n"))
        result = self.verify(signed)
        self.assertRegex(result, r"\bdkim=pass\b")
        self.assertIn("header.d=example.test", result)
        self.assertIn("header.s=sel1", result)

    def test_tampered_body_fails(self):
        signed = self.sign([message(body=b"pay 10 euros\r\n")])[0]
        self.assertIn(b"pay 10 euros", signed)
        result = self.verify(signed.replace(b"pay 10 euros", b"pay 99 euros"))
        self.assertRegex(result, r"\bdkim=fail\b")

    def test_every_message_of_a_connection(self):
        stored = self.sign([message(n) for n in range(1, 4)])
        bhs = set()
        for data in stored:
            tags = self.signature(data)
            self.assertEqual(tags["d"], "example.test")
            bhs.add(tags["b"])
        self.assertEqual(len(bhs), 3)  # three signatures, one each
        # and the last one of the session checks out
        self.assertRegex(self.verify(stored[-1]), r"\bdkim=pass\b")

    def test_other_domain_not_signed(self):
        stored = self.sign([message(sender_domain="example.org")])[0]
        self.assertNotIn("dkim-signature",
                         [n for n, _ in header_fields(stored)])
        # the verifier sees no signature at all
        self.assertRegex(self.verify(stored), r"\bdkim=none\b")


class RspamdTest(RealMilterCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dns = DnsServer([], zones=RSPAMD_DNS_ZONES)
        cls.rspamd = Rspamd(cls.dns.port)
        try:
            cls.rspamd.start()
        except BaseException:
            cls.rspamd.cleanup()
            cls.dns.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.rspamd.cleanup()
        cls.dns.cleanup()

    def server(self):
        return Server(plugins={"50-milter": milter_plugin(self.rspamd),
                               "90-store": store_plugin()})

    def test_gtube_rejected_clean_passes(self):
        gtube = message(1, body=b"This is the GTUBE:\r\n%s\r\n"
                        % GTUBE.encode())
        clean = message(2, body=b"Lunch on Thursday?\r\n")
        with self.server() as srv:
            spam, ham = self.send(srv, [gtube, clean])
            self.assertEqual(spam.code, 554, spam)
            self.assertEqual(spam.enhanced, "5.7.1")
            self.assertIn("Gtube pattern", spam.text)
            self.assertEqual(ham.code, 250, ham)
            stored = self.stored(srv, 1)
            self.assertIn(b"Message-ID: <2.real@example.test>", stored[0])
            self.assertTrue(stored[0].endswith(b"Lunch on Thursday?\r\n"))
        scans = self.rspamd.scans()
        self.assertIn(("1.real@example.test", "reject"), scans)
        # the clean one was scanned too, and let through by rspamd
        verdicts = [a for mid, a in scans if mid == "2.real@example.test"]
        self.assertEqual(len(verdicts), 1, scans)
        self.assertNotIn(verdicts[0], ("reject", "soft reject"))
        self.assertTrue(re.match(r"^[a-z ]+$", verdicts[0]), verdicts)


if __name__ == "__main__":
    main()
