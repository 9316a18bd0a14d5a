"""HTTP/2 through the core's HTTP service (include/postern/http.h): nginx
on 127.0.0.1 offers h2 over TLS (ALPN) and proxies to the recording
Python server of test_http_service.py, which holds the requests.

- the module sees version 20, and the requests arrive exactly;
- three calls from three sessions at once are three streams of ONE
  connection: nginx logs one connection number for all of them while the
  backend holds all three at the same time (multiplexing, not reuse one
  after the other).
"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_http_service as hs  # noqa: E402
from harness import (  # noqa: E402
    DEBIAN_PACKAGES,
    STOP_TIMEOUT,
    TIMER_GUARD,
    MissingProgram,
    Server,
    free_port,
    is_listening,
    main,
    require_programs,
    wait_until,
)

NGINX = "/usr/sbin/nginx"


def setUpModule():
    require_programs("certtool")
    if not os.access(NGINX, os.X_OK):  # /usr/sbin: maybe not on PATH
        raise MissingProgram("missing program: %s (Debian package: %s)"
                             % (NGINX, DEBIAN_PACKAGES["nginx"]))


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format conn '$connection $server_protocol $request_uri';
    access_log {tmp}/access.log conn;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


class Nginx:
    def __init__(self, tmp, cert, key, backend):
        self.tmp = tmp
        self.port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, port=self.port, cert=cert,
                                      key=key, backend=backend))
        self.argv = [NGINX, "-p", tmp, "-e", tmp + "/error.log", "-c", conf]
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        if not wait_until(lambda: is_listening(self.port)
                          or self.proc.poll() is not None, TIMER_GUARD):
            raise AssertionError("nginx did not start")
        if self.proc.poll() is not None:
            with open(self.tmp + "/error.log") as f:
                raise AssertionError("nginx exited:\n" + f.read())
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def url(self):
        return "https://127.0.0.1:%d/" % self.port

    def access_log(self):
        with open(self.tmp + "/access.log") as f:
            return [line.split() for line in f if line.strip()]


class Http2Test(hs.HttpTestCase):
    def test_streams_share_one_connection(self):
        with tempfile.TemporaryDirectory() as tmp:
            ca, cert, key = hs.TlsTest.make_certs(self, tmp)
            with hs.HttpServer() as web, Nginx(tmp, cert, key, web.port) as ngx, \
                    Server(plugins={"10-http": hs.http_plugin(ngx.url(),
                                                           ca_file=ca)},
                           # the HTTP/2 connection is per worker process
                           config={"workers": 1}) as srv:
                r = self.rcpt(srv, "post=first")
                self.assertEqual(
                    r.text, "2.0.0 http status=ok code=200 version=20 "
                    "reply=seen POST body=got 13 bytes")
                self.assertEqual(web.rec.requests[0][3], b"hello postern")
                clients, replies = [], []
                try:
                    for i in range(3):
                        c = srv.client()
                        c.ehlo()
                        c.cmd_expect("MAIL FROM:<a@example.org>", 250)
                        c.send(b"RCPT TO:<get=hold%d@example.com>\r\n" % i)
                        clients.append(c)
                    # all three are at the backend at once ...
                    self.assertTrue(wait_until(
                        lambda: web.rec.active == 3, TIMER_GUARD))
                    web.rec.release.set()
                    for c in clients:
                        replies.append(c.reply(timeout=TIMER_GUARD))
                finally:
                    for c in clients:
                        c.close()
                for r in replies:
                    self.assertIn("status=ok code=200 version=20 reply=held",
                                  r.text)
                # ... and came over one HTTP/2 connection
                self.assertTrue(wait_until(lambda: len(ngx.access_log()) == 4,
                                           TIMER_GUARD))
                log = ngx.access_log()
                self.assertEqual({proto for _, proto, _ in log}, {"HTTP/2.0"})
                self.assertEqual(len({conn for conn, _, _ in log}), 1, log)
                self.assertEqual(sorted(uri for _, _, uri in log),
                                 ["/first", "/hold0", "/hold1", "/hold2"])


if __name__ == "__main__":
    main()
