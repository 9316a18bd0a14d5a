"""The Prometheus endpoint ("metrics" in the main config): Debian's
prometheus server scrapes a postern with two workers, and the values it
reads back through its HTTP API after a known number of messages are the
sums over both workers, a killed worker's counts included; /metrics
itself speaks the text format; metrics are off by default, and a bad
"metrics" key is a config error."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    POSTERN_BIN,
    PosternTestCase,
    Server,
    free_port,
    is_listening,
    main,
    require_programs,
    store_plugin,
    wait_until,
)

PROMETHEUS = "prometheus"
# How long Prometheus may take to show what postern counted: a guard
# against a hang (scrapes are 1 s apart), never a measure of speed.
SCRAPE_GUARD = 60.0

# An instance name (a plugins.d file name) that needs escaping in a label
# value: a quote, a backslash and a non-ASCII letter. Prometheus reading
# it back proves the escaping.
STORE_INSTANCE = '90-st"ore\\\u00e9'
ACCEPTED_RCPT = "ok@example.com"
UNKNOWN_RCPT = "nobody@example.com"  # rcpt_list: unknown user -> 550


def setUpModule():
    require_programs(PROMETHEUS)


def http_get(url, method="GET"):
    """(status, headers, body) of one request to 127.0.0.1."""
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping one target every second,
    with a configuration and storage of its own under a temporary
    directory (the package's service is never used)."""

    def __init__(self, target_port):
        self.tmp = tempfile.mkdtemp(prefix="postern-prom-")
        self.port = free_port()
        config = os.path.join(self.tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                "global:\n"
                "  scrape_interval: 1s\n"
                "  scrape_timeout: 1s\n"
                "  evaluation_interval: 1s\n"
                "scrape_configs:\n"
                "  - job_name: postern\n"
                "    static_configs:\n"
                "      - targets: ['127.0.0.1:%d']\n" % target_port
            )
        self.log_path = os.path.join(self.tmp, "prometheus.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                "--config.file=" + config,
                "--storage.tsdb.path=" + os.path.join(self.tmp, "data"),
                "--web.listen-address=127.0.0.1:%d" % self.port,
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
        )

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def query(self, expr):
        """The value of an instant query with one result, or None."""
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (
            self.port,
            urllib.parse.urlencode({"query": expr}),
        )
        try:
            status, _, body = http_get(url)
        except OSError:
            return None
        if status != 200:
            return None
        data = json.loads(body)
        result = data.get("data", {}).get("result", [])
        if data.get("status") != "success" or len(result) != 1:
            return None
        return float(result[0]["value"][1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def metrics_server(workers=2):
    port = free_port()
    srv = Server(
        plugins=[
            ("50-rcpt_list", {"module": "rcpt_list",
                              "config": {"addresses": [ACCEPTED_RCPT]}}),
            (STORE_INSTANCE, store_plugin()),
        ],
        config={
            "workers": workers,
            "local_domains": ["example.com"],
            "metrics": {"address": "127.0.0.1", "port": port},
        },
    )
    srv.metrics_port = port
    return srv


def send(srv, rcpt):
    """One message on its own connection; True if it was accepted."""
    import smtplib

    with srv.smtplib() as s:
        try:
            s.sendmail("sender@client.test", [rcpt],
                       "Subject: metrics\r\n\r\nhello\r\n")
            return True
        except smtplib.SMTPRecipientsRefused:
            return False


def session_workers(srv):
    """Worker slots that served a client session, from the log."""
    slots = set()
    for line in srv.log_text().splitlines():
        if " connect " in line or " session_start " in line or " client=" in line:
            m = re.search(r" worker=(\d+)$", line)
            if m:
                slots.add(int(m.group(1)))
    return slots


def worker_pid(srv, slot):
    """The pid of the live worker in slot (the last one started there)."""
    pid = None
    for line in srv.log_text().splitlines():
        m = re.search(r" worker_started pid=(\d+) worker=(\d+) ", line)
        if m and int(m.group(2)) == slot:
            pid = int(m.group(1))
    return pid


def listening_ports(pids):
    """TCP ports in LISTEN state held by any of the processes."""
    inodes = set()
    for pid in pids:
        fd_dir = "/proc/%d/fd" % pid
        try:
            for fd in os.listdir(fd_dir):
                try:
                    target = os.readlink(os.path.join(fd_dir, fd))
                except OSError:
                    continue
                m = re.match(r"socket:\[(\d+)\]", target)
                if m:
                    inodes.add(m.group(1))
        except OSError:
            pass
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class MetricsTest(PosternTestCase):
    def test_prometheus_reads_the_sums_over_workers(self):
        with metrics_server(workers=2) as srv:
            self.assertTrue(wait_until(lambda: is_listening(srv.metrics_port),
                                       10), "the metrics port never listened")
            prom = Prometheus(srv.metrics_port)
            try:
                self.run_scenario(srv, prom)
            except BaseException:
                sys.stderr.write("--- prometheus log ---\n%s\n"
                                 % prom.log_text())
                raise
            finally:
                prom.stop()

    def run_scenario(self, srv, prom):
        accepted = rejected = 0
        for rcpt in [ACCEPTED_RCPT, UNKNOWN_RCPT, ACCEPTED_RCPT,
                     UNKNOWN_RCPT, ACCEPTED_RCPT]:
            ok = send(srv, rcpt)
            self.assertEqual(ok, rcpt == ACCEPTED_RCPT)
            accepted += ok
            rejected += not ok

        # A worker that served sessions dies: what it counted stays.
        served = session_workers(srv)
        self.assertTrue(served, "no session in the log names its worker")
        victim = min(served)
        pid = worker_pid(srv, victim)
        self.assertIsNotNone(pid)
        srv.worker_deaths_expected = True
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(srv.wait_log(r" worker_died pid=%d " % pid, 10))
        # the supervisor restarts it in the slot it freed
        self.assertTrue(
            wait_until(lambda: worker_pid(srv, victim) not in (None, pid), 10),
            "the killed worker was not restarted")

        for rcpt in [ACCEPTED_RCPT, UNKNOWN_RCPT, ACCEPTED_RCPT]:
            ok = send(srv, rcpt)
            accepted += ok
            rejected += not ok
        self.assertEqual((accepted, rejected), (5, 3))
        sessions = accepted + rejected

        expected = {
            'postern_messages_total{stage="store",result="accepted"}':
                accepted,
            'postern_messages_total{stage="rcpt",result="rejected"}':
                rejected,
            "postern_transactions_total": sessions,
            "postern_connections_total": sessions,
            "postern_connections_open": 0,
            "postern_store_duration_seconds_count": accepted,
            'postern_hook_duration_seconds_count{module_instance="%s"}'
            % STORE_INSTANCE.replace("\\", "\\\\").replace('"', '\\"'):
                accepted,
            'postern_hook_results_total{module_instance="50-rcpt_list",'
            'hook="rcpt",result="reject"}': rejected,
            'postern_hook_results_total{module_instance="50-rcpt_list",'
            'hook="rcpt",result="accept"}': accepted,
            'postern_rcpt_list_unknown_total{module_instance="50-rcpt_list"}':
                rejected,
            "postern_workers_up": 2,
            'up{job="postern"}': 1,
        }

        def values():
            return {q: prom.query(q) for q in expected}

        got = wait_until(lambda: (lambda v: v if v == expected else None)(
            values()), SCRAPE_GUARD, interval=0.5)
        if got is None:
            self.assertEqual(values(), expected)
        # histogram buckets are cumulative, +Inf is the count
        self.assertEqual(
            prom.query('postern_store_duration_seconds_bucket{le="+Inf"}'),
            accepted)
        self.assertLessEqual(
            prom.query('postern_store_duration_seconds_bucket{le="0.001"}'),
            accepted)
        self.assertEqual(len(srv.messages()), accepted)

    def test_metrics_page_format(self):
        with metrics_server(workers=1) as srv:
            self.assertTrue(wait_until(lambda: is_listening(srv.metrics_port),
                                       10))
            self.assertTrue(send(srv, ACCEPTED_RCPT))
            base = "http://127.0.0.1:%d" % srv.metrics_port
            status, headers, body = http_get(base + "/metrics")
            self.assertEqual(status, 200)
            self.assertEqual(headers["Content-Type"],
                             "text/plain; version=0.0.4; charset=utf-8")
            sample = re.compile(
                r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'
                r'(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})?'
                r' (-?[0-9.e+-]+|\+Inf|NaN)$')
            typed = {}
            helped = set()
            for line in body.splitlines():
                if line.startswith("# HELP "):
                    helped.add(line.split(" ")[2])
                    continue
                if line.startswith("# TYPE "):
                    _, _, name, kind = line.split(" ")
                    self.assertNotIn(name, typed, "TYPE twice: " + name)
                    self.assertIn(kind, ("counter", "gauge", "histogram"))
                    typed[name] = kind
                    continue
                m = sample.match(line)
                self.assertIsNotNone(m, "not a sample line: %r" % line)
                name = m.group(1)
                family = re.sub(r"_(bucket|sum|count)$", "", name)
                family = family if family in typed else name
                self.assertIn(family, typed, "no TYPE before " + line)
                self.assertIn(family, helped)
                self.assertTrue(name.startswith("postern_"))
                if typed[family] == "counter":
                    self.assertTrue(name.endswith("_total"), name)
            for name in ("postern_connections_total",
                         "postern_messages_total",
                         "postern_hook_results_total",
                         "postern_auth_total",
                         "postern_tls_sessions_total",
                         "postern_received_bytes_total",
                         "postern_rcpt_list_unknown_total"):
                self.assertEqual(typed.get(name), "counter", name)
            for name in ("postern_hook_duration_seconds",
                         "postern_store_duration_seconds"):
                self.assertEqual(typed.get(name), "histogram", name)
            for name in ("postern_connections_open", "postern_workers_up",
                         "postern_pending_contexts", "postern_spool_bytes",
                         "postern_spool_files"):
                self.assertEqual(typed.get(name), "gauge", name)
            self.assertIn(
                'postern_messages_total{stage="store",result="accepted"} 1\n',
                body)
            self.assertRegex(body, r"\npostern_received_bytes_total [1-9]")

            # a message half received holds a spool file
            def gauge(name):
                m = re.search(r"^%s (\d+)$" % name,
                              http_get(base + "/metrics")[2], re.M)
                return int(m.group(1))

            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<s@client.test>", 250)
                c.cmd_expect("RCPT TO:<%s>" % ACCEPTED_RCPT, 250)
                c.cmd_expect("DATA", 354)
                c.send(b"Subject: half\r\n\r\n" + b"x" * 2000 + b"\r\n")
                self.assertTrue(wait_until(
                    lambda: gauge("postern_spool_bytes") >= 2000, 10))
                self.assertEqual(gauge("postern_spool_files"), 1)
                c.send(b".\r\n")
                c.expect(250)
            self.assertTrue(wait_until(
                lambda: gauge("postern_spool_files") == 0, 10))
            self.assertEqual(gauge("postern_spool_bytes"), 0)

            self.assertEqual(http_get(base + "/")[0], 404)
            self.assertEqual(http_get(base + "/metrics", "POST")[0], 405)

    def test_tls_auth_limits_and_pending(self):
        from test_auth import hash_password, plain
        from test_tls import PKI, TlsServer, client_context, starttls

        pki = PKI()
        try:
            users = os.path.join(pki.dir, "users")
            with open(users, "w") as f:
                f.write("alice:%s\n" % hash_password("sha512crypt", "secret"))
            port = free_port()
            srv = TlsServer(
                pki,
                plugins={
                    "05-async": {"module": "test_async", "config": {
                        "hooks": {"mail": {"delay": 3, "result": "continue",
                                           "match": "slow"}}}},
                    "10-auth": {"module": "auth_file",
                                "config": {"file": users}},
                    "20-store": store_plugin(),
                },
                config={"workers": 1,
                        "metrics": {"address": "127.0.0.1", "port": port},
                        "limits": {"connections_per_ip": 1,
                                   "exempt_networks": []}})
            with srv:
                self.require_plugin("test_async")
                self.tls_auth_limits_and_pending(
                    srv, port, pki, client_context, starttls, plain)
        finally:
            pki.cleanup()

    def tls_auth_limits_and_pending(self, srv, port, pki, client_context,
                                    starttls, plain):
        import ssl

        def page():
            return http_get("http://127.0.0.1:%d/metrics" % port)[2]

        def value(series):
            m = re.search("^" + re.escape(series) + r" (\S+)$", page(), re.M)
            return float(m.group(1)) if m else None

        def wait_value(series, want):
            got = wait_until(lambda: value(series) == want, 10)
            self.assertTrue(got, "%s: %r, not %r" % (series, value(series),
                                                     want))

        self.assertTrue(wait_until(lambda: is_listening(port), 10))
        # TLS 1.3 and a good password, while a second connection from the
        # same address is refused by connections_per_ip
        c1 = srv.client()
        c1.ehlo()
        starttls(c1, client_context(pki))
        c1.ehlo()
        self.assertEqual(c1.cmd("AUTH PLAIN " + plain("alice", "secret")).code,
                         235)
        wait_value("postern_connections_open", 1)
        refused = srv.client(greet=False)
        self.assertEqual(refused.reply().code, 421)
        refused.close()
        # a MAIL that a module keeps PENDING for 3 s
        c1.send(b"MAIL FROM:<slow@client.test>\r\n")
        wait_value("postern_pending_contexts", 1)
        self.assertEqual(c1.reply(timeout=30).code, 250)
        wait_value("postern_pending_contexts", 0)
        c1.cmd("QUIT")
        c1.close()
        wait_value("postern_connections_open", 0)
        # TLS 1.2 and a wrong password
        c2 = srv.client()
        c2.ehlo()
        starttls(c2, client_context(pki, max_version=ssl.TLSVersion.TLSv1_2))
        c2.ehlo()
        self.assertEqual(c2.cmd("AUTH PLAIN " + plain("alice", "wrong")).code,
                         535)
        c2.close()

        wait_value('postern_auth_total{result="failure"}', 1)
        text = page()
        for line in ('postern_tls_sessions_total{version="TLS1.3"} 1',
                     'postern_tls_sessions_total{version="TLS1.2"} 1',
                     'postern_auth_total{result="success"} 1',
                     'postern_auth_total{result="failure"} 1',
                     'postern_connections_refused_total'
                     '{limit="connections_per_ip"} 1',
                     'postern_connections_refused_total'
                     '{limit="connections"} 0',
                     "postern_connections_total 2",
                     "postern_transactions_total 1",
                     'postern_hook_results_total{module_instance="10-auth",'
                     'hook="auth",result="accept"} 1',
                     'postern_hook_results_total{module_instance="10-auth",'
                     'hook="auth",result="reject"} 1',
                     'postern_hook_results_total{module_instance="05-async",'
                     'hook="mail",result="continue"} 1'):
            self.assertIn(line + "\n", text)
        # The PENDING call's time runs to its resume, about 3 s: one
        # observation above the 2.5 s bucket (the others, CONTINUE at
        # once, below it).
        def bucket(le):
            m = re.search(r'^postern_hook_duration_seconds_bucket\{'
                          r'module_instance="05-async",le="%s"\} (\d+)$'
                          % re.escape(le), text, re.M)
            return int(m.group(1))
        self.assertEqual(bucket("+Inf") - bucket("2.5"), 1)
        # (the module's timer runs on loop time, taken a little before
        # the call: the measured time may be a hair under its 3 s)
        m = re.search(r'^postern_hook_duration_seconds_sum'
                      r'\{module_instance="05-async"\} (\S+)$', text, re.M)
        self.assertGreater(float(m.group(1)), 2.5)

    def test_metrics_process_is_user_without_client_sockets(self):
        import pwd

        self.assertEqual(os.geteuid(), 0, "this case runs as root")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            self.fail("this case needs the user nobody (Debian's base-passwd)")
        port = free_port()
        srv = Server(plugins=[("90-store", store_plugin())],
                     config={"workers": 1, "user": "nobody",
                             "metrics": {"address": "127.0.0.1",
                                         "port": port}},
                     start=False)
        os.chmod(srv.tmp, 0o755)
        for d in (srv.spool, srv.maildir):
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        with srv:
            srv.start()
            m = srv.wait_log(r" metrics_started pid=(\d+)", 10)
            self.assertIsNotNone(m)
            pid = int(m.group(1))
            self.assertTrue(wait_until(lambda: is_listening(port), 10))
            self.assertEqual(http_get("http://127.0.0.1:%d/metrics"
                                      % port)[0], 200)
            with open("/proc/%d/status" % pid) as f:
                status = f.read()
            uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
            self.assertEqual(set(map(int, uids)), {nobody.pw_uid})
            # the client listener stays with the supervisor and workers
            self.assertEqual(listening_ports([pid]), {port})
            self.assertIn(srv.port, listening_ports([srv.proc.pid]))
            # a metrics process that dies is started again
            os.kill(pid, signal.SIGKILL)
            self.assertTrue(srv.wait_log(
                r" metrics_died pid=%d signal=SIGKILL" % pid, 10))
            self.assertTrue(srv.wait_log(
                r" metrics_started pid=(?!%d\b)\d+" % pid, 10))
            self.assertTrue(wait_until(
                lambda: http_get("http://127.0.0.1:%d/metrics"
                                 % port)[0] == 200, 10))

    def test_off_by_default(self):
        with Server(plugins=[("90-store", store_plugin())],
                    config={"workers": 1}) as srv:
            self.assertTrue(srv.wait_log(r" supervisor_ready ", 10))
            pids = [srv.proc.pid] + children(srv.proc.pid)
            self.assertEqual(len(pids), 2, "a process besides the worker")
            self.assertEqual(listening_ports(pids), {srv.port})
            self.assertEqual(srv.count_log(r" metrics_"), 0)

    def check_config(self, metrics):
        tmp = tempfile.mkdtemp(prefix="postern-metrics-cfg-")
        try:
            plugins = os.path.join(tmp, "plugins.d")
            os.makedirs(plugins)
            path = os.path.join(tmp, "postern.json")
            with open(path, "w") as f:
                json.dump({"listen": [{"address": "127.0.0.1",
                                       "port": free_port()}],
                           "spool_dir": os.path.join(tmp, "spool"),
                           "plugins_dir": plugins,
                           "metrics": metrics}, f)
            p = subprocess.run([POSTERN_BIN, "--check-config", "-c", path],
                               stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
            return p.returncode, p.stdout.decode("utf-8", "replace"), path
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_bad_metrics_config(self):
        cases = [
            (9425, r"\$\.metrics: expected an object or null"),
            ({"address": "localhost", "port": 9425},
             r"\$\.metrics\.address: expected a numeric IPv4 or IPv6 address"),
            ({"address": "127.0.0.1"}, r"\$\.metrics\.port: .*expected"),
            ({"address": "127.0.0.1", "port": 0},
             r"\$\.metrics\.port: expected an integer between 1 and 65535"),
            ({"address": "127.0.0.1", "port": 9425, "path": "/m"},
             r"\$\.metrics\.path: "),
        ]
        for metrics, want in cases:
            rc, out, path = self.check_config(metrics)
            self.assertNotEqual(rc, 0, "accepted: %r" % (metrics,))
            self.assertRegex(out, re.escape(path) + ": " + want)
        rc, out, _ = self.check_config({"address": "::1", "port": 9425})
        self.assertEqual(rc, 0, out)
        rc, out, _ = self.check_config(None)  # null: off, as when absent
        self.assertEqual(rc, 0, out)

    def test_metrics_port_taken_fails_start(self):
        with metrics_server(workers=1) as first:
            self.assertTrue(wait_until(
                lambda: is_listening(first.metrics_port), 10))
            second = Server(config={"metrics": {"address": "127.0.0.1",
                                                "port": first.metrics_port}},
                            start=False)
            try:
                p = subprocess.run([POSTERN_BIN, "-c", second.config_path],
                                   stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=60)
                out = p.stdout.decode("utf-8", "replace")
                self.assertEqual(p.returncode, 1, out)
                self.assertRegex(out, r"\$\.metrics: listen 127\.0\.0\.1 port "
                                 r"%d: Address already in use"
                                 % first.metrics_port)
            finally:
                second.cleanup()


if __name__ == "__main__":
    main()
