"""Whole SMTP transactions with real clients (smtplib, swaks) into
store_file: the stored message must be postern's Received header(s)
followed by exactly the bytes the client meant to send, and the envelope
JSON must describe the transaction."""

import os
import time
import socket
import smtplib
import json
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    HOSTNAME,
    PosternTestCase,
    Server,
    main,
    read_bytes,
    read_envelope,
    require_programs,
    split_added_headers,
    store_plugin,
    swaks,
)

STORE = {"20-store": store_plugin(envelope=True)}


def crlf(text):
    """Text with LF line ends -> bytes with CRLF line ends, ending in CRLF."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def setUpModule():
    require_programs("swaks")


class SmtpBasicTest(PosternTestCase):
    def test_smtplib_transaction_byte_exact(self):
        body = crlf(
            "From: Alice <alice@example.org>\n"
            "To: Bob <bob@example.com>\n"
            "Subject: byte exact\n"
            "\n"
            "first line\n"
            ".a line starting with a dot\n"
            "..two dots\n"
            ".\n"
            + "x" * 998 + "\n"
            + "  trailing spaces  \n"
            "\n"
            "last line\n"
        )
        with Server(plugins=STORE) as srv:
            with srv.smtplib() as s:
                refused = s.sendmail("alice@example.org", ["bob@example.com"], body)
                self.assertEqual(refused, {})
                code, _ = s.quit()
                self.assertEqual(code, 221)
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1, msgs)
            data = read_bytes(msgs[0])
            headers = self.assertStoredBody(data, body, rcpt="bob@example.com")
            self.assertIn(b"\r\n" + b"x" * 998 + b"\r\n", data)

            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["mail_from"], "alice@example.org")
            self.assertEqual(env["rcpt_to"], ["bob@example.com"])
            self.assertEqual(env["helo"], "client.test")
            self.assertEqual(env["client_ip"], "127.0.0.1")
            self.assertRegex(env["id"], r"^[0-9a-fA-F]{16}$")
            self.assertRegex(env["session"], r"^[0-9a-fA-F]{16}$")
            self.assertIn(env["size"], (len(data), len(body)))
            self.assertIn("received_at", env)
            # the queue id in the Received header is the envelope's id
            self.assertIn(" id %s " % env["id"], headers[0])
            # the spool is cleaned after the hand-off
            self.assertEqual(srv.spool_files(), [])

    def test_8bit_body_bytes(self):
        body = (
            b"Subject: 8bit\r\n"
            b"Content-Type: text/plain; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n"
            b"\r\n"
            b"caf\xe9 cr\xe8me br\xfbl\xe9e\r\n"
            b"\xff\xfe\x80\x81 raw high bytes\r\n"
            b"utf-8: \xc3\xa9\xe2\x82\xac\r\n"
        )
        with Server(plugins=STORE) as srv:
            with srv.smtplib() as s:
                s.ehlo()
                self.assertTrue(s.has_extn("8bitmime"))
                s.sendmail("a@example.org", ["b@example.com"], body,
                           mail_options=["BODY=8BITMIME"])
                s.quit()
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            self.assertStoredBody(read_bytes(msgs[0]), body, rcpt="b@example.com")
            env = read_envelope(srv.maildir, msgs[0])
            params = env["mail_params"]
            if isinstance(params, dict):
                upper = {k.upper(): v for k, v in params.items()}
                self.assertEqual(upper.get("BODY"), "8BITMIME")
            else:
                self.assertIn("BODY=8BITMIME", [p.upper() for p in params])

    def test_null_sender(self):
        body = crlf("Subject: bounce\n\nundeliverable\n")
        with Server(plugins=STORE) as srv:
            with srv.smtplib() as s:
                s.sendmail("", ["postmaster@example.com"], body)
                s.quit()
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            self.assertStoredBody(read_bytes(msgs[0]), body)
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["mail_from"], "")
            self.assertEqual(env["rcpt_to"], ["postmaster@example.com"])

    def test_several_messages_one_session(self):
        bodies = [crlf("Subject: msg %d\n\nbody number %d\n" % (i, i))
                  for i in range(3)]
        with Server(plugins=STORE) as srv:
            with srv.smtplib() as s:
                for i, body in enumerate(bodies):
                    s.sendmail("s%d@example.org" % i,
                               ["r%d@example.com" % i, "x@example.com"], body)
                s.quit()
            msgs = srv.wait_messages(3)
            self.assertEqual(len(msgs), 3)
            seen = {}
            for path in msgs:
                env = read_envelope(srv.maildir, path)
                i = int(env["mail_from"][1])
                self.assertEqual(env["rcpt_to"], ["r%d@example.com" % i,
                                                  "x@example.com"])
                self.assertStoredBody(read_bytes(path), bodies[i])
                seen[i] = env["id"]
            self.assertEqual(sorted(seen), [0, 1, 2])
            # each transaction has its own queue id, same session
            self.assertEqual(len(set(seen.values())), 3)
            sessions = {read_envelope(srv.maildir, p)["session"] for p in msgs}
            self.assertEqual(len(sessions), 1)

    def test_rset_between(self):
        body = crlf("Subject: after rset\n\nkept\n")
        with Server(plugins=STORE) as srv:
            with srv.smtplib() as s:
                s.ehlo()
                self.assertEqual(s.mail("dropped@example.org")[0], 250)
                self.assertEqual(s.rcpt("dropped@example.com")[0], 250)
                self.assertEqual(s.rset()[0], 250)
                s.sendmail("kept@example.org", ["kept@example.com"], body)
                s.quit()
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["mail_from"], "kept@example.org")
            self.assertEqual(env["rcpt_to"], ["kept@example.com"])
            self.assertStoredBody(read_bytes(msgs[0]), body)

    def test_swaks(self):
        text = "Hello from swaks\n.dot line\nend"
        with Server(plugins=STORE) as srv:
            rc, out = swaks("--server", "127.0.0.1:%d" % srv.port,
                            "--helo", "swaks.test",
                            "--to", "a@example.com", "--from", "b@example.org",
                            "--header", "Subject: swaks test",
                            "--body", text, "--timeout", "10")
            self.assertEqual(rc, 0, out)
            self.assertRegex(out, r"<-\s+250[ -]")
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            data = read_bytes(msgs[0])
            header_end = data.index(b"\r\n\r\n")
            body = data[header_end + 4:]
            # swaks may end its body with empty lines of its own
            self.assertEqual(body.rstrip(b"\r\n"),
                             b"Hello from swaks\r\n.dot line\r\nend")
            headers = data[:header_end].decode()
            self.assertIn("\r\nSubject: swaks test", headers)
            self.assertTrue(headers.startswith("Received: from swaks.test "),
                            headers[:200])
            self.assertIn("by %s (postern)" % HOSTNAME, headers)
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["mail_from"], "b@example.org")
            self.assertEqual(env["rcpt_to"], ["a@example.com"])
            self.assertEqual(env["helo"], "swaks.test")

    def test_helo_client_gets_smtp_protocol(self):
        """A HELO (not EHLO) client is recorded "with SMTP"."""
        body = crlf("Subject: helo\n\nold client\n")
        with Server(plugins=STORE) as srv:
            with srv.client() as c:
                c.cmd_expect("HELO old.client.test", 250)
                r = c.transaction("a@example.org", ["b@example.com"], body)
                self.assertEqual(r.code, 250, r)
                c.cmd_expect("QUIT", 221)
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            self.assertStoredBody(read_bytes(msgs[0]), body,
                                  helo="old.client.test", proto="SMTP")

    def test_empty_body(self):
        with Server(plugins=STORE) as srv:
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                c.cmd_expect("RCPT TO:<b@example.com>", 250)
                c.cmd_expect("DATA", 354)
                c.send(b".\r\n")
                c.expect(250)
                c.cmd_expect("QUIT", 221)
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            headers = split_added_headers(read_bytes(msgs[0]), b"")
            self.assertTrue(headers[0].startswith("Received:"))


def ipv6_loopback_port():
    """A free port on ::1, or None when the machine has no IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


class Ipv6ListenerTest(PosternTestCase):
    """IPv4 and IPv6 listeners side by side; the client address of an IPv6
    session reaches the envelope and the Received header as [IPv6:...]."""

    def test_ipv6_and_ipv4_listeners(self):
        port6 = ipv6_loopback_port()
        self.assertIsNotNone(port6, "no IPv6 loopback: cannot bind [::1] "
                             "(this test needs ::1 on lo)")
        with Server(plugins=STORE, start=False) as srv:
            srv.config["listen"].append(
                {"address": "::1", "port": port6, "tls": "none"})
            with open(srv.config_path, "w") as f:
                json.dump(srv.config, f)
            srv.start()
            ok = False
            for _ in range(100):  # the v4 port is checked by start()
                try:
                    socket.create_connection(("::1", port6), timeout=1).close()
                    ok = True
                    break
                except OSError:
                    time.sleep(0.05)
            self.assertTrue(ok, "nothing listens on [::1]:%d" % port6)
            body = crlf("Subject: v6\n\nover IPv6\n")
            with smtplib.SMTP("::1", port6, local_hostname="client.test",
                              timeout=10) as s6:
                s6.sendmail("a@example.org", ["b@example.com"], body)
            with smtplib.SMTP("127.0.0.1", srv.port,
                              local_hostname="client.test", timeout=10) as s4:
                s4.sendmail("c@example.org", ["d@example.com"], body)
            msgs = srv.wait_messages(2)
            envs = {read_envelope(srv.maildir, m)["mail_from"]:
                    (m, read_envelope(srv.maildir, m)) for m in msgs}
            path6, env6 = envs["a@example.org"]
            self.assertEqual(env6["client_ip"], "::1")
            self.assertIn(b"(unknown [IPv6:::1])", read_bytes(path6))
            path4, env4 = envs["c@example.org"]
            self.assertEqual(env4["client_ip"], "127.0.0.1")
            self.assertIn(b"(unknown [127.0.0.1])", read_bytes(path4))


if __name__ == "__main__":
    main()
