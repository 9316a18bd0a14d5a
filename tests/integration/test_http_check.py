"""The http_check module through real SMTP sessions, asking a real HTTP
policy service (Python's ThreadingHTTPServer, HTTP/1.1, on 127.0.0.1)
that records each request and answers from a table:

- deciding at RCPT: one recipient refused with the service's 550 and
  text, another accepted, the message stored for the accepted one only;
  the request carries stage, sender, recipient, client address, HELO,
  the recipients so far and the bearer token;
- accept at RCPT overrides the relay policy; the instance asks only at
  the hooks its plugins.d file attaches (connect, mail, data);
- tempfail gives the service's 4xx and text; disconnect gives 421 and
  closes the connection;
- headers the service asks for appear in the stored message;
- at the message stage the service sees the header section (unfolded)
  and the size, and refuses on a header value;
- a service that is down (connection refused), answers garbage or a 503,
  or is too slow: 451 by default, as on_error says otherwise;
- an https:// service verified with ca_file, shown the client
  certificate of cert_file/key_file; refused (451) without the CA;
- a client that leaves while its request is pending: the request is
  cancelled, the server goes on (under ASan: nothing leaks);
- the Python service printed in docs/modules.md works as documented.
"""

import http.server
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    IO_TIMEOUT,
    POSTERN_BIN,
    SOURCE_DIR,
    TIMER_GUARD,
    PosternTestCase,
    Server,
    free_port,
    is_listening,
    main,
    read_bytes,
    read_envelope,
    require_programs,
    split_added_headers,
    store_plugin,
    wait_until,
)

BODY = b"Subject: hello\r\nX-Note: first\r\n  folded\r\n\r\nhi\r\n"


class PolicyService:
    """A policy service in a thread: records every request's headers and
    JSON, answers with answer(request) -> (status, body) where body is a
    dict (sent as JSON) or bytes. While `hold` (an Event) is clear, the
    answers wait for it (at most TIMER_GUARD seconds)."""

    def __init__(self, answer, tls_context=None):
        self.answer = answer
        self.requests = []
        self.answered = 0
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    request = json.loads(raw)
                except ValueError:
                    request = {"unparsable": raw.decode("utf-8", "replace")}
                peer = None
                if hasattr(self.connection, "getpeercert"):
                    peer = self.connection.getpeercert()
                with service.lock:
                    service.requests.append(
                        {"path": self.path, "headers": dict(self.headers),
                         "json": request, "peer": peer})
                service.arrived.set()
                service.hold.wait(TIMER_GUARD)
                status, body = service.answer(request)
                with service.lock:
                    service.answered += 1
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (a timeout, a cancel)

        # a thread per connection, as daemons: a held answer never stops
        # the test from ending
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls_context:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket,
                                                        server_side=True)
        self.url = "%s://127.0.0.1:%d/policy" % (
            "https" if tls_context else "http", self.httpd.server_port)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(IO_TIMEOUT)
        return False

    def seen(self):
        with self.lock:
            return [r["json"] for r in self.requests]


def setUpModule():
    require_programs("certtool")


def make_certs(tmp):
    """A CA, a server certificate for 127.0.0.1 and a client
    certificate, made by certtool: (ca, server cert, server key, client
    cert, client key)."""
    def tool(*args):
        subprocess.run(["certtool"] + list(args), check=True,
                       capture_output=True, timeout=60)

    def path(name):
        return os.path.join(tmp, name)

    templates = {
        "ca": "cn = http_check test CA\nca\ncert_signing_key\n",
        "srv": "cn = 127.0.0.1\nip_address = 127.0.0.1\ntls_www_server\n"
               "encryption_key\nsigning_key\n",
        "cli": "cn = postern policy client\ntls_www_client\n"
               "signing_key\n",
    }
    for name, text in templates.items():
        with open(path(name + ".tmpl"), "w") as f:
            f.write(text + "expiration_days = 2\n")
        tool("--generate-privkey", "--outfile", path(name + ".key"))
    tool("--generate-self-signed", "--load-privkey", path("ca.key"),
         "--template", path("ca.tmpl"), "--outfile", path("ca.pem"))
    for name in ("srv", "cli"):
        tool("--generate-certificate", "--load-privkey", path(name + ".key"),
             "--load-ca-certificate", path("ca.pem"), "--load-ca-privkey",
             path("ca.key"), "--template", path(name + ".tmpl"),
             "--outfile", path(name + ".pem"))
    return (path("ca.pem"), path("srv.pem"), path("srv.key"),
            path("cli.pem"), path("cli.key"))


def check_plugin(url, hooks, **config):
    cfg = {"url": url}
    cfg.update(config)
    return {"module": "http_check", "hooks": hooks, "config": cfg}


def by_recipient(request):
    """Refuse bad@, accept good@, tempfail later@, else continue."""
    rcpt = request.get("recipient", "")
    if rcpt.startswith("bad@"):
        return 200, {"action": "reject", "code": 550, "enhanced": "5.7.1",
                     "text": "Not for you, says policy"}
    if rcpt.startswith("later@"):
        return 200, {"action": "tempfail", "code": 450, "enhanced": "4.7.1",
                     "text": "Greylisted by policy"}
    if rcpt.startswith("good@"):
        return 200, {"action": "accept",
                     "headers": [{"name": "X-Policy",
                                  "value": "accepted " + rcpt}]}
    return 200, {"action": "continue"}


class HttpCheckTest(PosternTestCase):
    def serve(self, url, hooks, **config):
        return Server(plugins={"10-policy": check_plugin(url, hooks, **config),
                               "90-store": store_plugin()})

    def send_one(self, srv, rcpt="bob@example.com", body=BODY):
        """A whole transaction; the reply to RCPT, or to the end of data."""
        with srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
            r = c.cmd("RCPT TO:<%s>" % rcpt)
            if r.code != 250:
                c.cmd("QUIT")
                return r
            c.cmd_expect("DATA", 354)
            c.send(body + b".\r\n")
            r = c.reply()
            c.cmd("QUIT")
            return r

    def test_rcpt_decides_per_recipient(self):
        with PolicyService(by_recipient) as svc, \
                self.serve(svc.url, ["rcpt"], token="t0ken") as srv:
            with srv.client() as c:
                c.ehlo("client.test")
                c.cmd_expect("MAIL FROM:<alice@example.org> SIZE=100", 250)
                # accept overrides the relay policy: remote.test is not
                # a local domain
                c.cmd_expect("RCPT TO:<good@remote.test>", 250)
                r = c.cmd("RCPT TO:<bad@example.com>")
                self.assertEqual(r.code, 550, r)
                self.assertEqual(r.enhanced, "5.7.1", r)
                self.assertIn("Not for you, says policy", r.text)
                r = c.cmd("RCPT TO:<later@example.com>")
                self.assertEqual(r.code, 450, r)
                self.assertEqual(r.enhanced, "4.7.1", r)
                self.assertIn("Greylisted by policy", r.text)
                c.cmd_expect("DATA", 354)
                c.send(BODY + b".\r\n")
                self.assertEqual(c.reply().code, 250)
                c.cmd("QUIT")
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            env = read_envelope(srv.maildir, msgs[0])
            self.assertEqual(env["rcpt_to"], ["good@remote.test"])
            added = split_added_headers(read_bytes(msgs[0]), BODY)
            # above postern's Received, as every added header
            self.assertEqual(added[0], "X-Policy: accepted good@remote.test")
            self.assertTrue(added[1].startswith("Received: "), added)

            reqs = svc.seen()
            self.assertEqual([r["recipient"] for r in reqs],
                             ["good@remote.test", "bad@example.com",
                              "later@example.com"])
            first = reqs[0]
            self.assertEqual(first["stage"], "rcpt")
            self.assertEqual(first["transaction"]["sender"],
                             "alice@example.org")
            self.assertEqual(first["transaction"]["params"], {"SIZE": "100"})
            self.assertEqual(first["transaction"]["recipients"], [])
            self.assertRegex(first["transaction"]["id"], r"^[0-9a-f]{16}$")
            self.assertEqual(first["session"]["client"]["address"],
                             "127.0.0.1")
            self.assertIsInstance(first["session"]["client"]["port"], int)
            self.assertEqual(first["session"]["helo"], "client.test")
            self.assertIsNone(first["session"]["tls"])
            self.assertIsNone(first["session"]["auth"])
            # the recipients accepted so far
            self.assertEqual(reqs[1]["transaction"]["recipients"],
                             ["good@remote.test"])
            headers = svc.requests[0]["headers"]
            self.assertEqual(headers.get("Authorization"), "Bearer t0ken")
            self.assertEqual(headers.get("Content-Type"), "application/json")
            self.assertEqual(svc.requests[0]["path"], "/policy")
            self.assertTrue(srv.wait_log(
                r'stage=rcpt action=reject code=550'), srv.log_tail())

    def test_connect_mail_and_data_stages(self):
        def answer(request):
            if request["stage"] == "data":
                return 200, {"action": "reject", "code": 554,
                             "enhanced": "5.7.1", "text": "No data today"}
            return 200, {"action": "continue"}

        with PolicyService(answer) as svc, \
                self.serve(svc.url, ["connect", "mail", "data"]) as srv:
            with srv.client() as c:
                c.ehlo("client.test")
                c.cmd_expect("MAIL FROM:<>", 250)
                c.cmd_expect("RCPT TO:<bob@example.com>", 250)
                r = c.cmd("DATA")
                self.assertEqual(r.code, 554, r)
                self.assertIn("No data today", r.text)
                c.cmd("QUIT")
            reqs = svc.seen()
            # only the hooks the plugins.d file attached
            self.assertEqual([r["stage"] for r in reqs],
                             ["connect", "mail", "data"])
            self.assertIsNone(reqs[0]["transaction"])
            self.assertIsNone(reqs[0]["session"]["helo"])
            self.assertEqual(reqs[1]["session"]["helo"], "client.test")
            self.assertTrue(reqs[1]["session"]["esmtp"])
            self.assertEqual(reqs[1]["transaction"]["sender"], "")
            self.assertEqual(reqs[2]["transaction"]["recipients"],
                             ["bob@example.com"])
            self.assertEqual(srv.messages(), [])

    def test_disconnect_at_helo(self):
        def answer(request):
            return 200, {"action": "disconnect", "text": "Go away"}

        with PolicyService(answer) as svc, \
                self.serve(svc.url, ["helo"]) as srv:
            with srv.client() as c:
                r = c.cmd("EHLO client.test")
                self.assertEqual(r.code, 421, r)
                self.assertIn("Go away", r.text)
                self.assertTrue(c.wait_closed())
            self.assertEqual([r["stage"] for r in svc.seen()], ["helo"])
            self.assertEqual(srv.messages(), [])

    def test_message_stage_sees_headers(self):
        def answer(request):
            for h in request.get("headers", []):
                if h["name"].lower() == "subject" and "spam" in h["value"]:
                    return 200, {"action": "reject", "code": 554,
                                 "enhanced": "5.7.1",
                                 "text": "Subject refused by policy"}
            return 200, {"action": "continue",
                         "headers": [{"name": "X-Policy-Checked",
                                      "value": "yes"}]}

        spam = b"Subject: cheap spam\r\n\r\nbuy\r\n"
        with PolicyService(answer) as svc, \
                self.serve(svc.url, ["message"]) as srv:
            r = self.send_one(srv, body=spam)
            self.assertEqual(r.code, 554, r)
            self.assertIn("Subject refused by policy", r.text)
            r = self.send_one(srv)
            self.assertEqual(r.code, 250, r)
            msgs = srv.wait_messages(1)
            self.assertEqual(len(msgs), 1)
            added = split_added_headers(read_bytes(msgs[0]), BODY)
            self.assertEqual(added[0], "X-Policy-Checked: yes")
            self.assertTrue(added[1].startswith("Received: "), added)

            reqs = svc.seen()
            self.assertEqual([r["stage"] for r in reqs],
                             ["message", "message"])
            req = reqs[1]
            names = [h["name"] for h in req["headers"]]
            # postern's Received first, then what the client sent, unfolded
            self.assertEqual(names, ["Received", "Subject", "X-Note"])
            self.assertIn({"name": "X-Note", "value": "first  folded"},
                          req["headers"])
            self.assertTrue(req["headers_complete"])
            self.assertGreater(req["size"], len(BODY))
            self.assertEqual(req["transaction"]["recipients"],
                             ["bob@example.com"])

    def test_service_down(self):
        down = "http://127.0.0.1:%d/policy" % free_port()
        with self.serve(down, ["rcpt"]) as srv:
            r = self.send_one(srv)
            self.assertEqual(r.code, 451, r)
            self.assertEqual(r.enhanced, "4.3.0", r)
            self.assertTrue(srv.wait_log(
                r"stage=rcpt error=connect reason=.* on_error=tempfail"),
                srv.log_tail())
            self.assertEqual(srv.messages(), [])
        with self.serve(down, ["rcpt"], on_error="continue") as srv:
            self.assertEqual(self.send_one(srv).code, 250)
            self.assertEqual(len(srv.wait_messages(1)), 1)
            self.assertTrue(srv.wait_log(r"error=connect .*on_error=continue"),
                            srv.log_tail())

    def test_malformed_answers(self):
        answers = {
            "garbage": (200, b"this is not json"),
            "unknown action": (200, {"action": "maybe"}),
            "wrong class": (200, {"action": "reject", "code": 451}),
            "status 503": (503, {"action": "continue"}),
        }
        current = ["garbage"]

        def answer(request):
            return answers[current[0]]

        with PolicyService(answer) as svc, \
                self.serve(svc.url, ["rcpt"]) as srv:
            for name in answers:
                current[0] = name
                r = self.send_one(srv)
                self.assertEqual(r.code, 451, (name, r))
            self.assertEqual(srv.count_log(r"error=answer reason="), 3,
                             srv.log_tail())
            self.assertTrue(srv.wait_log(r'error=status reason="HTTP status '
                                         r'503"'), srv.log_tail())
            self.assertTrue(srv.wait_log(r'reason="action: expected'),
                            srv.log_tail())
            self.assertTrue(srv.wait_log(r'reason="code: expected a 5xx'),
                            srv.log_tail())
            self.assertEqual(len(svc.seen()), 4)
        with PolicyService(answer) as svc, \
                self.serve(svc.url, ["rcpt"], on_error="reject") as srv:
            current[0] = "garbage"
            r = self.send_one(srv)
            self.assertEqual(r.code, 550, r)
            self.assertEqual(r.enhanced, "5.7.1", r)

    def test_timeout(self):
        with PolicyService(by_recipient) as svc:
            svc.hold.clear()  # every answer waits for the test
            with self.serve(svc.url, ["rcpt"], timeout=0.5) as srv:
                r = self.send_one(srv)
                self.assertEqual(r.code, 451, r)
                self.assertTrue(srv.wait_log(
                    r"stage=rcpt error=timeout .*on_error=tempfail"),
                    srv.log_tail())
            with self.serve(svc.url, ["rcpt"], timeout=0.5,
                            on_error="continue") as srv:
                self.assertEqual(self.send_one(srv).code, 250)
                self.assertTrue(srv.wait_log(r"error=timeout"),
                                srv.log_tail())
            # the service had the requests all along
            self.assertEqual(len(svc.seen()), 2)

    def test_client_leaves_while_pending(self):
        with PolicyService(by_recipient) as svc, \
                self.serve(svc.url, ["rcpt"], timeout=30) as srv:
            svc.hold.clear()
            for i in range(3):
                svc.arrived.clear()
                c = srv.client()
                c.ehlo()
                c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                c.send(b"RCPT TO:<good@example.com>\r\n")
                self.assertTrue(svc.arrived.wait(IO_TIMEOUT))
                c.abort()
                self.assertTrue(wait_until(
                    lambda: srv.count_log(r"stage=rcpt cancelled") > i, 10),
                    srv.log_tail())
            # cancelled when the client left, not when an answer came
            self.assertEqual(svc.answered, 0)
            self.assertTrue(wait_until(
                lambda: srv.count_log(r"disconnect reason=") >= 3, 10),
                srv.log_tail())
            svc.hold.set()
            # still serving, and deciding
            r = self.send_one(srv, rcpt="bad@example.com")
            self.assertEqual(r.code, 550, r)
            self.assertTrue(srv.alive)
            self.assertEqual(srv.messages(), [])

    def test_https_with_ca_and_client_certificate(self):
        with tempfile.TemporaryDirectory() as tmp:
            ca, cert, key, client_cert, client_key = make_certs(tmp)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            ctx.load_verify_locations(ca)
            ctx.verify_mode = ssl.CERT_REQUIRED  # the client must show one
            with PolicyService(by_recipient, tls_context=ctx) as svc:
                with self.serve(svc.url, ["rcpt"], ca_file=ca,
                                cert_file=client_cert,
                                key_file=client_key) as srv:
                    r = self.send_one(srv, rcpt="bad@example.com")
                    self.assertEqual(r.code, 550, r)
                    self.assertIn("Not for you, says policy", r.text)
                self.assertEqual(len(svc.requests), 1)
                subject = dict(x[0] for x in svc.requests[0]["peer"]["subject"])
                self.assertEqual(subject["commonName"],
                                 "postern policy client")
                # without the CA the service is not trusted: nothing is sent
                with self.serve(svc.url, ["rcpt"]) as srv:
                    r = self.send_one(srv, rcpt="bad@example.com")
                    self.assertEqual(r.code, 451, r)
                    self.assertTrue(srv.wait_log(
                        r"stage=rcpt error=tls .*on_error=tempfail"),
                        srv.log_tail())
                self.assertEqual(len(svc.requests), 1)

    def test_config_errors_name_the_path(self):
        cases = [
            ({"timeout": 0}, "$.config.timeout: expected a number of seconds"),
            ({"on_error": "ignore"}, "$.config.on_error: expected"),
            ({"url": "ftp://127.0.0.1/"}, "$.config.url: expected an http://"),
        ]
        for extra, message in cases:
            config = {"url": "http://127.0.0.1:9/policy"}
            config.update(extra)
            srv = Server(plugins={"10-policy": {"module": "http_check",
                                                "config": config}},
                         start=False)
            try:
                p = subprocess.run([POSTERN_BIN, "--check-config", "-c",
                                    srv.config_path],
                                   stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=30)
            finally:
                srv.cleanup()
            out = p.stdout.decode("utf-8", "replace")
            self.assertNotEqual(p.returncode, 0, out)
            self.assertIn("10-policy.json: " + message, out)

    def test_documented_service(self):
        """The Python service of docs/modules.md, as printed there."""
        with open(os.path.join(SOURCE_DIR, "docs", "modules.md")) as f:
            doc = f.read()
        m = re.search(r"### A service in ten lines of Python\n\n```python\n"
                      r"(.*?)```", doc, re.S)
        self.assertIsNotNone(m, "no Python service in docs/modules.md")
        port = free_port()
        code = m.group(1).replace("8080", str(port))
        proc = subprocess.Popen([sys.executable, "-c", code],
                                stdin=subprocess.DEVNULL)
        try:
            self.assertTrue(wait_until(lambda: is_listening(port), IO_TIMEOUT))
            url = "http://127.0.0.1:%d/policy" % port
            with self.serve(url, ["rcpt"]) as srv:
                r = self.send_one(srv, rcpt="spam@example.com")
                self.assertEqual(r.code, 550, r)
                self.assertIn("Not here", r.text)
                self.assertEqual(self.send_one(srv).code, 250)
                self.assertEqual(len(srv.wait_messages(1)), 1)
        finally:
            proc.kill()
            proc.wait(IO_TIMEOUT)


if __name__ == "__main__":
    main()
