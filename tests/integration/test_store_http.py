"""store_http against a real HTTP receiver (Python's ThreadingHTTPServer,
HTTP/1.1, in a thread on 127.0.0.1, over plain HTTP or TLS with a test CA
made by certtool):
- the document validates against docs/store_http.schema.json and its
  message decodes to exactly what a message file would hold (the client's
  data after postern's Received header); envelope, client and ids match;
- the endpoint's id goes into the 250 text;
- the HMAC signature verifies with the Python check of docs/modules.md;
- a 50 MB message, signed, passes with the gateway's resident memory
  growing by less than 5 MB (the receiver streams it to disk, hashing as
  it reads);
- 500 and a timeout give 451 (after the configured retries, same
  document each time), a reject answer 550 with its text, once;
- failover to a second URL when the first refuses connections;
- https with a CA file and a client certificate, and a failure without
  the CA; the TLS of the SMTP session (STARTTLS) in the document;
- the spf module's result in "results";
- a client that leaves while the request is in flight, or while a retry
  waits: no crash, nothing leaks (the harness fails on sanitizer
  reports), and the gateway serves the next message.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dns_server import DnsServer, require_dnsmasq  # noqa: E402
from harness import (  # noqa: E402
    HOSTNAME,
    RECEIVED_RX,
    SOURCE_DIR,
    TIMER_GUARD,
    PosternTestCase,
    Server,
    dot_stuff,
    free_port,
    main,
    require_programs,
    split_added_headers,
    wait_until,
)

BODY = b"Subject: http\r\nFrom: <a@example.org>\r\n\r\nhanded off\r\n"
SCHEMA_PATH = os.path.join(SOURCE_DIR, "docs", "store_http.schema.json")
MODULES_DOC = os.path.join(SOURCE_DIR, "docs", "modules.md")
TOOL_TIMEOUT = 60.0
DATA_MARK = b'"data":"'


def setUpModule():
    require_programs("certtool")
    require_dnsmasq()
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        raise AssertionError("missing Python module: jsonschema (Debian "
                             "package: python3-jsonschema)") from None


def schema_validator():
    import jsonschema

    with open(SCHEMA_PATH) as f:
        schema = json.load(f)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def documented_check():
    """The receiver's signature check, as docs/modules.md shows it."""
    with open(MODULES_DOC) as f:
        text = f.read()
    m = re.search(r"<!-- store_http-verify:[^>]*-->\n```python\n(.*?)```",
                  text, re.S)
    if not m:
        raise AssertionError("docs/modules.md has no store_http-verify block")
    scope = {}
    exec(compile(m.group(1), MODULES_DOC, "exec"), scope)
    return scope["postern_signature_ok"]


# --- the receiver -------------------------------------------------------------


class Receiver:
    """An HTTP/1.1 endpoint recording every POST: headers, and the body
    written to a file while hashing it (never held in memory whole).

    Behaviour, set by the test: status and answer (a dict sent as JSON,
    or bytes), hang (read the request, never answer until close()), and
    script, a list of (status, answer) used first, one per request."""

    def __init__(self, tls=None, hmac_key=None):
        self.validator = schema_validator()
        self.dir = tempfile.mkdtemp(prefix="postern-http-")
        self.lock = threading.Lock()
        self.requests = []
        self.status = 200
        self.answer = {"ok": True}
        self.hang = False
        self.script = []
        self.hmac_key = hmac_key
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                if tls is not None:
                    self.request.settimeout(TIMER_GUARD)
                    self.request.do_handshake()
                super().setup()

            def log_message(self, *args):
                pass

            def do_POST(self):
                receiver._serve(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(
                self.httpd.socket, server_side=True,
                do_handshake_on_connect=False)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls is not None else "http"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
            daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "%s://127.0.0.1:%d/in" % (self.scheme, self.port)

    def _serve(self, h):
        length = int(h.headers.get("Content-Length", "-1"))
        with self.lock:
            n = len(self.requests)
        path = os.path.join(self.dir, "body-%d" % n)
        sha = hashlib.sha256()
        ts = h.headers.get("X-Postern-Timestamp", "")
        mac = (hmac.new(self.hmac_key, ts.encode() + b".", hashlib.sha256)
               if self.hmac_key else None)
        got = 0
        with open(path, "wb") as f:
            while got < length:
                chunk = h.rfile.read(min(1 << 16, length - got))
                if not chunk:
                    break
                got += len(chunk)
                sha.update(chunk)
                if mac:
                    mac.update(chunk)
                f.write(chunk)
        peer = None
        if isinstance(h.request, ssl.SSLSocket):
            cert = h.request.getpeercert()
            if cert:
                peer = dict(x[0] for x in cert["subject"])
        record = {"headers": dict(h.headers.items()), "path": path,
                  "length": length, "received": got,
                  "sha256": sha.hexdigest(),
                  "mac": "sha256=" + mac.hexdigest() if mac else None,
                  "peer": peer, "version": h.request_version,
                  "schema_errors": self._schema_errors(path, got, length)}
        with self.lock:
            self.requests.append(record)
            status, answer = (self.script.pop(0) if self.script
                              else (self.status, self.answer))
        if self.hang:
            self.release.wait(TIMER_GUARD)
            h.close_connection = True
            return
        body = json.dumps(answer).encode() if isinstance(answer, dict) \
            else answer
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _schema_errors(self, path, got, length):
        """Every document is checked against the schema; a large one
        with its message data left out (the rest is not held whole)."""
        if got != length:
            return ["body cut short: %d of %d bytes" % (got, length)]
        with open(path, "rb") as f:
            if length < (8 << 20):
                doc = json.load(f)
            else:
                start = f.read(1 << 16)
                doc = json.loads(start[:start.index(DATA_MARK)
                                       + len(DATA_MARK)] + b'"}}')
        return sorted(e.message for e in self.validator.iter_errors(doc))

    def count(self):
        with self.lock:
            return len(self.requests)

    def body(self, i):
        with open(self.requests[i]["path"], "rb") as f:
            return f.read()

    def document(self, i):
        return json.loads(self.body(i))

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        if exc_type is None:
            errors = [(i, r["schema_errors"])
                      for i, r in enumerate(self.requests)
                      if r["schema_errors"]]
            if errors:
                raise AssertionError("documents not matching %s: %s"
                                     % (SCHEMA_PATH, errors))
        return False


# --- a test CA -----------------------------------------------------------------


class PKI:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client
    certificate, made with certtool."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="postern-http-pki-")
        self.ca_key = self._key("ca")
        self.ca = os.path.join(self.dir, "ca.pem")
        self._certtool("--generate-self-signed", "--load-privkey", self.ca_key,
                       "--template", self._template("ca", [
                           'cn = "Postern HTTP Test CA"', "ca",
                           "cert_signing_key"]),
                       "--outfile", self.ca)
        self.server = self._issue("server", [
            'cn = "127.0.0.1"', 'ip_address = "127.0.0.1"', "tls_www_server",
            "signing_key"])
        self.client = self._issue("client", [
            'cn = "gateway.postern.test"', "tls_www_client", "signing_key"])

    def _certtool(self, *args):
        r = subprocess.run(["certtool", *args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=TOOL_TIMEOUT)
        if r.returncode != 0:
            raise AssertionError("certtool %s failed: %s" % (
                " ".join(args), r.stderr.decode("utf-8", "replace")))

    def _key(self, name):
        path = os.path.join(self.dir, name + ".key")
        self._certtool("--generate-privkey", "--key-type=ecdsa", "--outfile",
                       path)
        return path

    def _template(self, name, lines):
        path = os.path.join(self.dir, name + ".tmpl")
        with open(path, "w") as f:
            f.write("\n".join(lines + ["expiration_days = 2"]) + "\n")
        return path

    def _issue(self, name, lines):
        key = self._key(name)
        cert = os.path.join(self.dir, name + ".pem")
        self._certtool("--generate-certificate", "--load-privkey", key,
                       "--load-ca-certificate", self.ca,
                       "--load-ca-privkey", self.ca_key,
                       "--template", self._template(name, lines),
                       "--outfile", cert)
        return cert, key

    def server_context(self, require_client=False):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.server)
        if require_client:
            ctx.load_verify_locations(self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# --- helpers -------------------------------------------------------------------


def http_plugin(urls, **config):
    cfg = {"urls": urls} if isinstance(urls, list) else {"url": urls}
    cfg.setdefault("retry_delay", 0.05)
    cfg.update(config)
    return {"module": "store_http", "config": cfg}


def proc_status(pid):
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


class StoreHttpTest(PosternTestCase):
    def send(self, srv, body=BODY, mail_params="", rcpts=("bob@example.com",),
             timeout=None):
        with srv.client(timeout=timeout or 30.0) as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<alice@example.org>%s" % mail_params, 250)
            for r in rcpts:
                c.cmd_expect("RCPT TO:<%s>" % r, 250)
            c.cmd_expect("DATA", 354)
            c.send(dot_stuff(body) + b".\r\n")
            reply = c.reply()
            c.cmd("QUIT")
            return reply

    def send_starttls(self, srv, pki):
        """One message over STARTTLS with smtplib; (code, text) of DATA."""
        import smtplib

        ctx = ssl.create_default_context(cafile=pki.ca)
        with smtplib.SMTP("127.0.0.1", srv.port, local_hostname="client.test",
                          timeout=30) as s:
            s.starttls(context=ctx)
            s.ehlo("client.test")
            s.mail("alice@example.org")
            s.rcpt("bob@example.com")
            code, text = s.data(BODY)
            return code, text.decode("utf-8", "replace")

    def check_document(self, rec, i, body=BODY, smtp_tls=False):
        """The i-th document: valid, and its message is what a message
        file would hold. Returns (document, Received match)."""
        raw = rec.body(i)
        r = rec.requests[i]
        self.assertEqual(r["received"], r["length"])
        self.assertEqual(len(raw), r["length"])
        self.assertEqual(r["headers"].get("Content-Type"), "application/json")
        doc = json.loads(raw)
        self.assertEqual(r["schema_errors"], [],
                         "document does not match the schema")
        message = base64.b64decode(doc["message"]["data"], validate=True)
        self.assertEqual(doc["message"]["size"], len(message))
        if smtp_tls:
            # Received names the TLS version and cipher, and ESMTPS
            headers = split_added_headers(message, body)
            m = re.match(r"^Received: from client\.test \(.*\) by %s "
                         r"\(postern\) with ESMTPS id (?P<id>\w+) "
                         % re.escape(HOSTNAME), headers[0])
            self.assertIsNotNone(m, headers[0])
        else:
            headers = self.assertStoredBody(message, body)
            m = RECEIVED_RX.match(headers[0])
        self.assertEqual(doc["id"], m.group("id"))
        self.assertEqual(r["headers"].get("X-Postern-Id"), doc["id"])
        return doc, m

    def test_document_and_id(self):
        with Receiver() as rec, Server(plugins={
                "50-http": http_plugin(rec.url, token="s3cr3t-token")}) as srv:
            rec.answer = {"id": "rcv-000123"}
            r = self.send(srv, mail_params=" SIZE=%d BODY=8BITMIME"
                          % len(BODY), rcpts=("bob@example.com",
                                              "carol@example.com"))
            self.assertEqual((r.code, r.enhanced), (250, "2.0.0"), r)
            self.assertIn("queued as rcv-000123", r.text)
            self.assertEqual(rec.count(), 1)
            req = rec.requests[0]
            self.assertEqual(req["version"], "HTTP/1.1")
            self.assertEqual(req["headers"].get("Authorization"),
                             "Bearer s3cr3t-token")
            self.assertNotIn("X-Postern-Signature", req["headers"])
            doc, received = self.check_document(rec, 0)
            self.assertEqual(doc["version"], 1)
            self.assertEqual(doc["gateway"], HOSTNAME)
            self.assertRegex(doc["session"], r"^[0-9a-f]{16}$")
            self.assertEqual(doc["envelope"], {
                "mail_from": "alice@example.org",
                "mail_params": {"SIZE": str(len(BODY)), "BODY": "8BITMIME"},
                "rcpt_to": ["bob@example.com", "carol@example.com"]})
            client = doc["client"]
            self.assertEqual((client["ip"], client["helo"], client["esmtp"],
                              client["rdns"], client["auth_user"]),
                             ("127.0.0.1", "client.test", True, None, None))
            self.assertGreater(client["port"], 0)
            self.assertEqual(doc["tls"], {"active": False, "version": None,
                                          "cipher": None, "peer_dn": None})
            self.assertEqual(doc["results"], {})
            t = time.strptime(doc["received_at"], "%Y-%m-%dT%H:%M:%SZ")
            self.assertLess(abs(time.mktime(t) - time.timezone - time.time()),
                            3600)
            # an answer without an id: the transaction id
            rec.answer = b"stored"
            r = self.send(srv)
            self.assertEqual(r.code, 250, r)
            self.assertIn("queued as %s" % rec.document(1)["id"], r.text)
            # an id that would break the reply is made safe
            rec.answer = {"id": "x\u00e9\r\n250 y" + "z" * 100}
            r = self.send(srv)
            self.assertEqual(r.code, 250, r)
            self.assertEqual(len(r.lines), 1)
            # é is two bytes, CR LF two more, the space one: each a "?"
            self.assertRegex(r.text, r"queued as x\?{4}250\?yz+$")
            self.assertLessEqual(len(r.text.split("queued as ")[1]), 64)

    def test_signature(self):
        key = b"k3y-\x01-for-signing"
        check = documented_check()
        with Receiver(hmac_key=key) as rec:
            key_file = os.path.join(rec.dir, "hmac.key")
            with open(key_file, "wb") as f:
                f.write(key + b"\n")
            token_file = os.path.join(rec.dir, "token")
            with open(token_file, "w") as f:
                f.write("file-token.1\r\n")
            with Server(plugins={"50-http": http_plugin(
                    rec.url, hmac_key_file=key_file,
                    token_file=token_file)}) as srv:
                r = self.send(srv)
                self.assertEqual(r.code, 250, r)
                req = rec.requests[0]
                self.assertEqual(req["headers"].get("Authorization"),
                                 "Bearer file-token.1")
                self.check_document(rec, 0)
                body = rec.body(0)
                self.assertRegex(req["headers"]["X-Postern-Signature"],
                                 r"^sha256=[0-9a-f]{64}$")
                self.assertTrue(check(key, req["headers"], body))
                self.assertEqual(req["mac"],
                                 req["headers"]["X-Postern-Signature"])
                # the check can fail: another key, another body, old
                self.assertFalse(check(b"other", req["headers"], body))
                self.assertFalse(check(key, req["headers"], body + b" "))
                old = dict(req["headers"])
                old["X-Postern-Timestamp"] = str(int(time.time()) - 3600)
                self.assertFalse(check(key, old, body))

    def test_50mb_message_streams(self):
        size_target = 50 << 20
        key = b"big-message-key"
        with Receiver(hmac_key=key) as rec, Server(
                plugins={"50-http": http_plugin(rec.url, timeout=120,
                                                hmac_key=key.decode())},
                config={"limits": {"message_size": 64 << 20}}) as srv:
            # warm up: the HTTP service, TLS libraries, pool threads
            self.assertEqual(self.send(srv).code, 250)
            pid = srv.proc.pid
            with open("/proc/%d/clear_refs" % pid, "w") as f:
                f.write("5")  # VmHWM starts again from VmRSS
            before = proc_status(pid)
            sent = 0
            with srv.client(timeout=120.0) as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                c.cmd_expect("RCPT TO:<bob@example.com>", 250)
                c.cmd_expect("DATA", 354)
                head = b"Subject: big\r\n\r\n"
                c.send(head)
                sent += len(head)
                line_no = 0
                while sent < size_target:
                    chunk = b"".join(b"%08d %s\r\n" % (line_no + i, b"x" * 67)
                                     for i in range(8192))
                    line_no += 8192
                    c.send(chunk)
                    sent += len(chunk)
                c.send(b".\r\n")
                r = c.reply(timeout=120.0)
                self.assertEqual(r.code, 250, r)
            after = proc_status(pid)
            growth = after["VmHWM"] - before["VmRSS"]
            sys.stderr.write("\n50 MB message: VmRSS before %d KiB, VmHWM "
                             "after %d KiB\n" % (before["VmRSS"] >> 10,
                                                 after["VmHWM"] >> 10))
            self.assertLess(growth, 5 << 20,
                            "RSS grew by %d KiB (before %s, after %s)"
                            % (growth >> 10, before, after))
            # the document, decoded from the receiver's file a piece at
            # a time: the data sent after postern's Received header
            self.assertEqual(rec.count(), 2)
            req = rec.requests[1]
            self.assertEqual(req["received"], req["length"])
            # signed in a first pass over the message, then streamed
            self.assertEqual(req["mac"], req["headers"]["X-Postern-Signature"])
            with open(req["path"], "rb") as f:
                start = f.read(1 << 16)
                at = start.index(DATA_MARK) + len(DATA_MARK)
                doc = json.loads(start[:at] + b'"}}')
                self.assertEqual(req["schema_errors"], [])
                f.seek(at)
                got = hashlib.sha256()
                prefix = b""
                carry = b""
                decoded = 0
                tail = b""
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    end = chunk.find(b'"')
                    if end >= 0:
                        tail = chunk[end:] + f.read()
                        chunk = chunk[:end]
                    text = carry + chunk
                    cut = len(text) - len(text) % 4
                    data = base64.b64decode(text[:cut], validate=True)
                    carry = text[cut:]
                    if len(prefix) < 4096:
                        prefix += data[:4096 - len(prefix)]
                    got.update(data)
                    decoded += len(data)
                    if end >= 0:
                        break
            self.assertEqual(carry, b"")
            self.assertEqual(tail, b'"}}')
            self.assertEqual(doc["message"]["size"], decoded)
            received = decoded - sent
            self.assertGreater(received, 0)
            m = RECEIVED_RX.match(split_added_headers(prefix[:received],
                                                      b"")[0])
            self.assertIsNotNone(m, prefix[:received])
            self.assertEqual(m.group("id"), doc["id"])
            # exactly postern's Received header, then the data sent
            self.assertEqual(got.hexdigest(),
                             self._hash_of(prefix[:received], sent))

    @staticmethod
    def _hash_of(prefix, size):
        """sha256 of prefix + the big body the test sends (regenerated)."""
        h = hashlib.sha256(prefix)
        head = b"Subject: big\r\n\r\n"
        h.update(head)
        n = len(head)
        line_no = 0
        while n < size:
            chunk = b"".join(b"%08d %s\r\n" % (line_no + i, b"x" * 67)
                             for i in range(8192))
            line_no += 8192
            h.update(chunk)
            n += len(chunk)
        return h.hexdigest()

    def test_500_retried_then_451(self):
        with Receiver() as rec, Server(plugins={"50-http": http_plugin(
                rec.url, retries=2)}) as srv:
            rec.status, rec.answer = 500, {"error": "boom"}
            r = self.send(srv)
            self.assertEqual((r.code, r.enhanced), (451, "4.4.0"), r)
            self.assertIn("HTTP status 500", r.text)
            self.assertNotIn(str(rec.port), r.text)  # never the URL
            self.assertEqual(rec.count(), 3)  # the first try and 2 retries
            # the same document each time, with the same id
            self.assertEqual(len({q["sha256"] for q in rec.requests}), 1)
            self.assertEqual(len({q["headers"]["X-Postern-Id"]
                                  for q in rec.requests}), 1)
            self.check_document(rec, 2)
            # a 503 then a 200: stored on the retry
            rec.script = [(503, b"busy")]
            rec.status, rec.answer = 200, {"id": "second-try"}
            r = self.send(srv)
            self.assertEqual(r.code, 250, r)
            self.assertIn("second-try", r.text)
            self.assertEqual(rec.count(), 5)

    def test_timeout_451(self):
        with Receiver() as rec, Server(plugins={"50-http": http_plugin(
                rec.url, timeout=1, retries=0)}) as srv:
            rec.hang = True
            t0 = time.monotonic()
            r = self.send(srv)
            self.assertGreaterEqual(time.monotonic() - t0, 1.0)
            self.assertEqual((r.code, r.enhanced), (451, "4.4.2"), r)
            self.assertIn("timed out", r.text)
            self.assertEqual(rec.count(), 1)

    def test_deadline_bounds_the_retries(self):
        with Receiver() as rec, Server(plugins={"50-http": http_plugin(
                rec.url, retries=10, retry_delay=0.2, deadline=1)}) as srv:
            rec.status = 502
            r = self.send(srv)
            self.assertEqual(r.code, 451, r)
            # 0.2 + 0.4 + 0.8 > 1 s: at most three attempts fit
            self.assertLessEqual(rec.count(), 3)
            self.assertGreaterEqual(rec.count(), 2)

    def test_reject_and_defer(self):
        with Receiver() as rec, Server(plugins={"50-http": http_plugin(
                rec.url, retries=2)}) as srv:
            rec.status = 422
            rec.answer = {"action": "reject", "code": 550,
                          "enhanced": "5.7.1", "text": "Spam detected"}
            r = self.send(srv)
            self.assertEqual((r.code, r.enhanced), (550, "5.7.1"), r)
            self.assertIn("Spam detected", r.text)
            self.assertEqual(rec.count(), 1)  # a reject is not retried
            rec.status = 200
            rec.answer = {"action": "defer", "text": "Mailbox busy"}
            r = self.send(srv)
            self.assertEqual((r.code, r.enhanced), (451, "4.7.1"), r)
            self.assertIn("Mailbox busy", r.text)
            self.assertEqual(rec.count(), 2)

    def test_failover(self):
        dead = free_port()  # nothing listens there
        with Receiver() as rec, Server(plugins={"50-http": http_plugin(
                ["http://127.0.0.1:%d/in" % dead, rec.url],
                retries=0)}) as srv:
            rec.answer = {"id": "from-second"}
            r = self.send(srv)
            self.assertEqual(r.code, 250, r)
            self.assertIn("from-second", r.text)
            self.assertEqual(rec.count(), 1)
            self.check_document(rec, 0)
            self.assertIsNotNone(srv.wait_log(
                r"attempt failed .*endpoint=1 ", timeout=5))
        # both refusing: 451 4.4.1
        with Server(plugins={"50-http": http_plugin(
                ["http://127.0.0.1:%d/in" % dead], retries=1)}) as srv:
            r = self.send(srv)
            self.assertEqual((r.code, r.enhanced), (451, "4.4.1"), r)
            self.assertEqual(srv.count_log(r"attempt failed "), 2)

    def test_tls_endpoint(self):
        pki = PKI()
        try:
            with Receiver(tls=pki.server_context(require_client=True)) as rec:
                plugin = http_plugin(rec.url, ca_file=pki.ca,
                                     cert_file=pki.client[0],
                                     key_file=pki.client[1], retries=0)
                srv = Server(plugins={"50-http": plugin}, start=False)
                # the SMTP client comes over STARTTLS too (same test CA)
                srv.config["listen"][0]["tls"] = "starttls"
                srv.config["tls"] = {"certificates": [
                    {"cert": pki.server[0], "key": pki.server[1]}]}
                with open(srv.config_path, "w") as f:
                    json.dump(srv.config, f)
                srv.start()
                with srv:
                    code, text = self.send_starttls(srv, pki)
                    self.assertEqual(code, 250, text)
                    self.assertEqual(rec.requests[0]["peer"],
                                     {"commonName": "gateway.postern.test"})
                    doc, _ = self.check_document(rec, 0, smtp_tls=True)
                    tls = doc["tls"]
                    self.assertTrue(tls["active"])
                    self.assertRegex(tls["version"], r"^TLS1\.[23]$")
                    self.assertTrue(tls["cipher"])
                    self.assertIsNone(tls["peer_dn"])
                # without the test CA the server is not trusted
                plugin = http_plugin(rec.url, cert_file=pki.client[0],
                                     key_file=pki.client[1], retries=0)
                with Server(plugins={"50-http": plugin}) as srv:
                    r = self.send(srv)
                    self.assertEqual((r.code, r.enhanced), (451, "4.4.2"), r)
                    self.assertEqual(rec.count(), 1)
        finally:
            pki.cleanup()

    def test_spf_result(self):
        zone = [("pass.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")]
        with DnsServer(zone) as dns, Receiver() as rec, Server(
                plugins={"10-spf": {"module": "spf", "config": {
                    "authserv_id": HOSTNAME}},
                    "50-http": http_plugin(rec.url)},
                config={"dns": {"servers": [dns.server],
                                "reverse": False}}) as srv:
            with srv.client() as c:
                c.ehlo()
                r = c.transaction("alice@pass.test", ["bob@example.com"],
                                  BODY)
                self.assertEqual(r.code, 250, r)
            doc = rec.document(0)
            self.assertEqual(rec.requests[0]["schema_errors"], [])
            self.assertEqual(doc["results"], {"spf": "pass"})
            message = base64.b64decode(doc["message"]["data"])
            names = [h.split(":")[0] for h in split_added_headers(message,
                                                                  BODY)]
            self.assertIn("Received-SPF", names)
            self.assertIn("Received", names)

    def test_client_leaves_mid_request(self):
        with Receiver() as rec, Server(plugins={"50-http": http_plugin(
                rec.url, timeout=20)}) as srv:
            rec.hang = True
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
            c.cmd_expect("RCPT TO:<bob@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(dot_stuff(BODY) + b".\r\n")
            self.assertTrue(wait_until(lambda: rec.count() == 1, 10))
            c.abort()
            self.assertIsNotNone(srv.wait_log(r"cancelled id=", timeout=10),
                                 "the request was not cancelled")
            self.assertTrue(srv.alive)
            rec.release.set()
            rec.hang = False
            r = self.send(srv)
            self.assertEqual(r.code, 250, r)
            self.assertEqual(rec.count(), 2)

    def test_client_leaves_while_retry_waits(self):
        with Receiver() as rec, Server(plugins={"50-http": http_plugin(
                rec.url, retry_delay=30, deadline=120)}) as srv:
            rec.status = 503
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
            c.cmd_expect("RCPT TO:<bob@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(dot_stuff(BODY) + b".\r\n")
            self.assertTrue(wait_until(lambda: srv.count_log(
                r"attempt failed ") == 1, 10))
            c.abort()
            # stop with the retry timer pending: destroy frees the job,
            # the sanitizers stay quiet
            self.assertEqual(srv.stop(), [])
            self.assertEqual(srv.proc.returncode, 0)
            self.assertEqual(rec.count(), 1)
            self.assertEqual(srv.count_log(
                r"stopping with messages waiting for a retry dropped=1 "), 1)


if __name__ == "__main__":
    main()
