"""The core's HTTP service (include/postern/http.h) against real servers:
a Python http.server (HTTP/1.1, keep-alive) in a thread on 127.0.0.1,
driven through tests/plugins/test_http.c, which answers in SMTP replies.

- what the module sends arrives exactly (method, headers, memory body, a
  streamed message body of known and unknown size), and what the server
  answers reaches the module (status, header, body, version);
- kept-alive connections are reused (fewer TCP connections than calls);
- failures get their own status: a server that never answers (TIMEOUT),
  a closed port (CONNECT), a body over the limit (TOO_LARGE), a TLS
  server not trusted (TLS);
- http.max_in_flight: with a cap of 2 and 5 calls held by the server, the
  server never sees more than 2 at once, and all 5 complete;
- TLS with a CA made by certtool verifies;
- a client that vanishes while a call waits: the call is cancelled, the
  module resumes, nothing leaks (the harness fails on sanitizer reports).
"""

import os
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    POSTERN_BIN,
    TIMER_GUARD,
    PosternTestCase,
    Server,
    main,
    require_programs,
    store_plugin,
    wait_until,
)

MESSAGE = (b"Subject: http\r\nFrom: a@example.org\r\n\r\n"
           + b"line of the body\r\n" * 2000)


def setUpModule():
    require_programs("certtool")


class Recorder:
    """Requests seen, connections opened, calls running at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []     # (method, path, headers dict, body)
        self.connections = set()
        self.active = 0
        self.max_active = 0
        self.events = []       # ("begin"|"end", path)
        self.release = threading.Event()


def make_handler(rec, behaviour):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                for _ in range(100000):
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    data += self.rfile.read(size)
                    self.rfile.readline()
                return data
            n = int(self.headers.get("Content-Length", "0"))
            return self.rfile.read(n) if n else b""

        def _handle(self):
            body = self._body()
            with rec.lock:
                rec.connections.add(self.client_address)
                rec.requests.append((self.command, self.path,
                                     dict(self.headers.items()), body))
                rec.active += 1
                rec.max_active = max(rec.max_active, rec.active)
                rec.events.append(("begin", self.path))
            try:
                behaviour(self, rec, body)
            finally:
                with rec.lock:
                    rec.active -= 1
                    rec.events.append(("end", self.path))

        do_GET = do_POST = do_PUT = _handle

    return Handler


def answer(handler, code=200, body=b"ok", headers=None):
    handler.send_response(code)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def default_behaviour(handler, rec, body):
    path = handler.path
    if path.startswith("/big"):
        answer(handler, 200, b"x" * 100000)
    elif path.startswith("/hold"):
        rec.release.wait(TIMER_GUARD)
        answer(handler, 200, b"held", {"X-Reply": "held"})
    elif path.startswith("/silent"):
        rec.release.wait(TIMER_GUARD)
    elif path.startswith("/continue"):
        # an interim response with a header of its own: not the answer's
        handler.send_response_only(100)
        handler.send_header("X-Reply", "interim")
        handler.end_headers()
        answer(handler, 201, b"final")
    elif path.startswith("/fail"):
        answer(handler, 503, b"try later", {"X-Reply": "busy"})
    else:
        answer(handler, 200, b"got %d bytes" % len(body),
               {"X-Reply": "seen " + handler.command})


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client postern aborted: expected in these tests


class HttpServer:
    def __init__(self, behaviour=default_behaviour, tls_context=None):
        self.rec = Recorder()
        self.httpd = QuietServer(("127.0.0.1", 0),
                                 make_handler(self.rec, behaviour))
        if tls_context:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket,
                                                        server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05})

    def url(self, scheme="http"):
        return "%s://127.0.0.1:%d/" % (scheme, self.port)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.rec.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(TIMER_GUARD)


def http_plugin(url, **extra):
    cfg = {"url": url}
    cfg.update(extra)
    return {"module": "test_http", "config": cfg}


class HttpTestCase(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_http")

    def rcpt(self, srv, local, client=None):
        own = client is None
        c = client or srv.client()
        try:
            if own:
                c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<%s@example.com>" % local, timeout=TIMER_GUARD)
            c.cmd_expect("RSET", 250)
            return r
        finally:
            if own:
                c.cmd("QUIT")
                c.close()


class RequestResponseTest(HttpTestCase):
    def test_get_post_and_answers_arrive_exactly(self):
        with HttpServer() as web, Server(
                plugins={"10-http": http_plugin(web.url())}) as srv:
            r = self.rcpt(srv, "get=a/b?x=1")
            self.assertEqual(r.code, 250, r)
            self.assertEqual(
                r.text, "2.0.0 http status=ok code=200 version=11 "
                "reply=seen GET body=got 0 bytes")
            r = self.rcpt(srv, "post=p")
            self.assertEqual(
                r.text, "2.0.0 http status=ok code=200 version=11 "
                "reply=seen POST body=got 13 bytes")
            r = self.rcpt(srv, "get=fail")
            self.assertEqual(
                r.text, "2.0.0 http status=ok code=503 version=11 "
                "reply=busy body=try later")
            reqs = web.rec.requests
            self.assertEqual([(m, p) for m, p, _, _ in reqs],
                             [("GET", "/a/b?x=1"), ("POST", "/p"),
                              ("GET", "/fail")])
            _, _, headers, body = reqs[1]
            self.assertEqual(body, b"hello postern")
            self.assertEqual(headers["X-Test"], "rcpt")
            self.assertEqual(headers["Content-Type"], "text/plain")
            self.assertEqual(headers["Content-Length"], "13")
            self.assertNotIn("Expect", headers)
            self.assertRegex(headers["User-Agent"], r"^postern/\d")

    def test_headers_of_the_last_response_only(self):
        with HttpServer() as web, Server(
                plugins={"10-http": http_plugin(web.url())}) as srv:
            r = self.rcpt(srv, "post=continue")
            self.assertEqual(
                r.text, "2.0.0 http status=ok code=201 version=11 "
                "reply=- body=final")

    def test_streamed_message_body(self):
        for chunked in (False, True):
            with HttpServer() as web, Server(plugins={
                    "10-http": http_plugin(web.url(), chunked=chunked),
                    "20-store": store_plugin()}) as srv:
                with srv.client() as c:
                    c.ehlo()
                    r = c.transaction("a@example.org", ["bob@example.com"],
                                      MESSAGE)
                    self.assertEqual(r.code, 250, r)
                    c.cmd("QUIT")
                self.assertEqual(len(web.rec.requests), 1)
                method, path, headers, body = web.rec.requests[0]
                self.assertEqual((method, path), ("POST", "/message"))
                # what postern stores: its Received header, then the message
                self.assertTrue(body.startswith(b"Received: "), body[:80])
                self.assertTrue(body.endswith(MESSAGE), body[-80:])
                self.assertEqual(headers["Content-Type"], "message/rfc822")
                self.assertRegex(headers["X-Tx"], r"^[0-9a-f]{16}$")
                if chunked:
                    self.assertEqual(headers["Transfer-Encoding"], "chunked")
                    self.assertNotIn("Content-Length", headers)
                else:
                    self.assertEqual(headers["Content-Length"],
                                     str(len(body)))

    def test_connections_are_reused(self):
        with HttpServer() as web, Server(
                plugins={"10-http": http_plugin(web.url())}) as srv:
            with srv.client() as c:
                c.ehlo()
                for i in range(6):
                    r = self.rcpt(srv, "get=n%d" % i, client=c)
                    self.assertEqual(r.code, 250, r)
                c.cmd("QUIT")
            self.assertEqual(len(web.rec.requests), 6)
            self.assertLess(len(web.rec.connections), 6)
            self.assertEqual(len(web.rec.connections), 1)


class FailureTest(HttpTestCase):
    def test_silent_server_times_out(self):
        with HttpServer() as web, Server(
                plugins={"10-http": http_plugin(web.url(), timeout=0.5)}) as srv:
            r = self.rcpt(srv, "get=silent")
            self.assertEqual(r.code, 250, r)
            self.assertIn("status=timeout code=0", r.text)
            self.assertTrue(srv.wait_log(r"test_http result status=timeout"))
            self.assertEqual(web.rec.requests[0][1], "/silent")

    def test_refused_connection(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nobody listens there now
        with Server(plugins={"10-http": http_plugin(
                "http://127.0.0.1:%d/" % port)}) as srv:
            r = self.rcpt(srv, "get=x")
            self.assertIn("status=connect code=0", r.text)
            self.assertTrue(srv.wait_log(
                r"test_http result status=connect code=0 error=\"[^\"]+\""))
            # the core's own line, with the session that sent the call
            self.assertTrue(srv.wait_log(
                r"debug [0-9a-f]{16} http method=\"?GET\"? "
                r"url=\"http://127\.0\.0\.1:%d/x\" status=connect error="
                % port))

    def test_response_over_the_limit(self):
        with HttpServer() as web, Server(plugins={"10-http": http_plugin(
                web.url(), max_response=1000)}) as srv:
            r = self.rcpt(srv, "get=big")
            self.assertIn("status=too_large code=0", r.text)
            r = self.rcpt(srv, "get=small")  # the next call is fine
            self.assertIn("status=ok code=200", r.text)

    def test_failing_body_source(self):
        with HttpServer() as web, Server(plugins={"10-http": http_plugin(
                web.url(), fail_body=True, timeout=5)}) as srv:
            with srv.client() as c:
                c.ehlo()
                r = c.transaction("a@example.org", ["bob@example.com"],
                                  MESSAGE)
                self.assertEqual(r.code, 451, r)
                self.assertIn("status=body code=0", r.text)
            # the server never got the whole body it was promised
            for _, _, headers, body in web.rec.requests:
                self.assertLess(len(body), int(headers["Content-Length"]))

    def test_failed_message_post_is_a_tempfail(self):
        def refuse(handler, rec, body):
            answer(handler, 500, b"no")
        with HttpServer(refuse) as web, Server(
                plugins={"10-http": http_plugin(web.url())}) as srv:
            with srv.client() as c:
                c.ehlo()
                r = c.transaction("a@example.org", ["bob@example.com"],
                                  MESSAGE)
                self.assertEqual(r.code, 451, r)
                self.assertIn("code=500", r.text)


class ConfigTest(HttpTestCase):
    def test_check_config_wants_a_readable_ca_file(self):
        srv = Server(config={"http": {"ca_file": "/nonexistent/ca.pem"}},
                     start=False)
        try:
            p = subprocess.run([POSTERN_BIN, "--check-config", "-c",
                                srv.config_path], capture_output=True,
                               text=True, timeout=TIMER_GUARD)
        finally:
            srv.cleanup()
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("$.http.ca_file: expected a readable PEM CA file",
                      p.stderr)


class CapTest(HttpTestCase):
    def test_max_in_flight_queues_the_rest(self):
        with HttpServer() as web, Server(
                plugins={"10-http": http_plugin(web.url())},
                # max_in_flight is per worker process
                config={"http": {"max_in_flight": 2}, "workers": 1}) as srv:
            clients, results = [], []
            try:
                for i in range(5):
                    c = srv.client()
                    c.ehlo()
                    c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                    c.send(b"RCPT TO:<get=hold%d@example.com>\r\n" % i)
                    clients.append(c)
                # two reach the server, the others wait in postern's queue
                self.assertTrue(wait_until(
                    lambda: len(web.rec.requests) == 2, TIMER_GUARD))
                self.assertFalse(wait_until(
                    lambda: len(web.rec.requests) > 2, 0.5))
                web.rec.release.set()
                for c in clients:
                    results.append(c.reply(timeout=TIMER_GUARD))
            finally:
                for c in clients:
                    c.close()
            for r in results:
                self.assertEqual(r.code, 250, r)
                self.assertIn("status=ok code=200", r.text)
            self.assertEqual(len(web.rec.requests), 5)
            self.assertEqual(web.rec.max_active, 2)
            # every later call began after an earlier one ended
            begins = [i for i, e in enumerate(web.rec.events)
                      if e[0] == "begin"]
            ends = [i for i, e in enumerate(web.rec.events) if e[0] == "end"]
            self.assertLess(ends[0], begins[2])


class CancelTest(HttpTestCase):
    def test_cancel_at_once(self):
        with HttpServer() as web, Server(
                plugins={"10-http": http_plugin(web.url())}) as srv:
            r = self.rcpt(srv, "cancel=x")
            self.assertEqual(r.text, "2.1.5 cancelled")
            r = self.rcpt(srv, "get=after")
            self.assertIn("status=ok", r.text)
            self.assertEqual(srv.count_log("callback of a cancelled call"), 0)
            self.assertNotIn("/x", [p for _, p, _, _ in web.rec.requests])

    def test_queued_call_of_a_gone_client_is_never_sent(self):
        with HttpServer() as web, Server(
                plugins={"10-http": http_plugin(web.url())},
                # the queue is per worker process
                config={"http": {"max_in_flight": 1}, "workers": 1}) as srv:
            first, second = srv.client(), srv.client()
            try:
                for c, path in ((first, "hold-first"), (second, "queued")):
                    c.ehlo()
                    c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                    c.send(b"RCPT TO:<get=%s@example.com>\r\n"
                           % path.encode())
                    if c is first:
                        self.assertTrue(wait_until(
                            lambda: len(web.rec.requests) == 1, TIMER_GUARD))
                second.abort()  # its call waits in the queue
                self.assertTrue(srv.wait_log(
                    r"test_http result status=cancelled .*orphaned=1",
                    timeout=TIMER_GUARD))
                web.rec.release.set()
                r = first.reply(timeout=TIMER_GUARD)
                self.assertIn("status=ok code=200", r.text)
                first.cmd_expect("RSET", 250)
                r = self.rcpt(srv, "get=after", client=first)
                self.assertIn("status=ok code=200", r.text)
            finally:
                first.close()
                second.close()
            self.assertEqual([p for _, p, _, _ in web.rec.requests],
                             ["/hold-first", "/after"])

    def test_client_gone_while_waiting(self):
        with HttpServer() as web, Server(
                plugins={"10-http": http_plugin(web.url())}) as srv:
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.send(b"RCPT TO:<get=hold@example.com>\r\n")
            self.assertTrue(wait_until(lambda: len(web.rec.requests) == 1,
                                       TIMER_GUARD))
            c.abort()
            self.assertTrue(srv.wait_log(
                r"test_http result status=cancelled code=0 "
                r"error=\"?cancelled\"? orphaned=1", timeout=TIMER_GUARD))
            # the server may answer now: nobody waits for it any more
            web.rec.release.set()
            with srv.client() as c2:  # postern still serves
                c2.ehlo()
                c2.cmd("QUIT")


class CurlTest(HttpTestCase):
    """postern/curl.h: a module's own easy handle on the same multi."""

    def test_own_handle_shares_the_connections(self):
        with HttpServer() as web, Server(
                plugins={"10-http": http_plugin(web.url())}) as srv:
            with srv.client() as c:
                c.ehlo()
                r = self.rcpt(srv, "get=first", client=c)
                self.assertIn("status=ok code=200", r.text)
                r = self.rcpt(srv, "curl=second", client=c)
                self.assertEqual(r.text,
                                 "2.0.0 curl result=0 code=200 body=got 0 bytes")
                c.cmd("QUIT")
            self.assertEqual([p for _, p, _, _ in web.rec.requests],
                             ["/first", "/second"])
            # one connection cache: the module's handle reused the
            # connection of the core's request
            self.assertEqual(len(web.rec.connections), 1)
            self.assertEqual(srv.count_log("accepted twice"), 0)

    def test_own_handle_aborted_when_the_client_goes(self):
        with HttpServer() as web, Server(
                plugins={"10-http": http_plugin(web.url())}) as srv:
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            c.send(b"RCPT TO:<curl=hold@example.com>\r\n")
            self.assertTrue(wait_until(lambda: len(web.rec.requests) == 1,
                                       TIMER_GUARD))
            c.abort()
            # CURLE_ABORTED_BY_CALLBACK is 42
            self.assertTrue(srv.wait_log(
                r"test_http curl result=42 code=0 orphaned=1",
                timeout=TIMER_GUARD))


class TlsTest(HttpTestCase):
    def make_certs(self, tmp):
        def tool(*args):
            subprocess.run(["certtool"] + list(args), check=True,
                           capture_output=True)
        ca_key, ca_cert = tmp + "/ca.key", tmp + "/ca.pem"
        key, cert = tmp + "/srv.key", tmp + "/srv.pem"
        with open(tmp + "/ca.tmpl", "w") as f:
            f.write("cn = postern test CA\nca\ncert_signing_key\n"
                    "expiration_days = 2\n")
        with open(tmp + "/srv.tmpl", "w") as f:
            f.write("cn = 127.0.0.1\nip_address = 127.0.0.1\n"
                    "tls_www_server\nencryption_key\nsigning_key\n"
                    "expiration_days = 2\n")
        tool("--generate-privkey", "--outfile", ca_key)
        tool("--generate-self-signed", "--load-privkey", ca_key,
             "--template", tmp + "/ca.tmpl", "--outfile", ca_cert)
        tool("--generate-privkey", "--outfile", key)
        tool("--generate-certificate", "--load-privkey", key,
             "--load-ca-certificate", ca_cert, "--load-ca-privkey", ca_key,
             "--template", tmp + "/srv.tmpl", "--outfile", cert)
        return ca_cert, cert, key

    def test_verified_with_the_ca_and_refused_without(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            ca, cert, key = self.make_certs(tmp)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            with HttpServer(tls_context=ctx) as web:
                with Server(plugins={"10-http": http_plugin(
                        web.url("https"), ca_file=ca)}) as srv:
                    r = self.rcpt(srv, "get=secure")
                    self.assertIn("status=ok code=200", r.text)
                with Server(plugins={"10-http": http_plugin(
                        web.url("https"))}) as srv:
                    r = self.rcpt(srv, "get=untrusted")
                    self.assertIn("status=tls code=0", r.text)
                # the main config's http.ca_file is the default
                with Server(plugins={"10-http": http_plugin(web.url("https"))},
                            config={"http": {"ca_file": ca}}) as srv:
                    r = self.rcpt(srv, "get=main-ca")
                    self.assertIn("status=ok code=200", r.text)
                paths = [p for _, p, _, _ in web.rec.requests]
                self.assertIn("/secure", paths)
                self.assertNotIn("/untrusted", paths)


if __name__ == "__main__":
    main()
