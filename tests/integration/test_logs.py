"""Logs: log_format "json", log_target "syslog", and the final line of
every transaction.

- json: across sessions with an accepted message (a sender with a quote
  and a backslash), a refused RCPT, a refused MAIL, RSET, a command with
  bytes that are not UTF-8, a connection dropped in the middle of DATA and
  a QUIT in the middle of a transaction, every line postern writes parses
  as one JSON object, and the transaction lines say what became of each
  transaction; one look-up by the transaction id finds its lines. Each
  outcome (discarded, tempfailed by the store with the module's code,
  rejected at DATA, a BDAT chunk too big, a 554-and-close at RCPT) gets
  its result, code and stage.
- syslog: a real datagram socket (Python's, bound in the test's directory,
  named by log_syslog_socket) receives one datagram per line in syslog(3)'s
  format with the facility and a priority from the level, and no time
  stamp of postern's own; without a receiver the lines go to stderr.
- reload: SIGHUP applies a changed log_format to the new workers.
"""

import datetime
import json
import os
import re
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    IO_TIMEOUT,
    WRAPPER,
    PosternTestCase,
    Server,
    dot_stuff,
    main,
    parse_log_line,
    store_plugin,
    wait_until,
)

SENDER = '"q\\"b\\\\s"@remote.test'  # "q\"b\\s"@remote.test

STAGES = ("ms_mail", "ms_rcpt", "ms_data", "ms_message", "ms_store",
          "ms_total")


def plugins():
    return [
        ("10-reject", {"module": "test_reject", "hooks": ["mail"],
                       "config": {"match": "refuse-me"}}),
        ("50-list", {"module": "rcpt_list",
                     "config": {"addresses": ["@example.com"]}}),
        ("90-store", store_plugin()),
    ]


def postern_lines(text):
    """The log's lines, without a wrapper's own (valgrind's ==PID==)."""
    lines = text.splitlines()
    if WRAPPER:
        lines = [l for l in lines if not l.startswith("==")]
    return lines


def parse_text_line(line):
    """(event, fields) of a text line; a module's line may hold free
    words (not key=value), so only its event is checked."""
    if line.split(" ")[3:4] == ["module"]:
        return "module", {}
    return parse_log_line(line)


def stopped_log(test, srv):
    """Stop the server (every line written) and read its whole log."""
    test.assertEqual(srv.stop(), [])
    with open(srv.log_path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")  # strictly: JSON text is UTF-8
    except UnicodeDecodeError as e:
        test.fail("the log is not UTF-8: %s" % e)


def json_lines(test, text):
    out = []
    for line in postern_lines(text):
        try:
            obj = json.loads(line)
        except ValueError as e:
            test.fail("not JSON (%s): %r" % (e, line))
        test.assertIsInstance(obj, dict, line)
        for key in ("time", "level", "event"):
            test.assertIn(key, obj, line)
        test.assertRegex(obj["time"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        test.assertIn(obj["level"], ("error", "warning", "info", "debug"))
        out.append(obj)
    return out


class SyslogReceiver:
    """A unix datagram socket standing in for the syslog daemon."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.datagrams = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.datagrams.append(data)

    def received(self):
        with self.lock:
            return list(self.datagrams)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


SYSLOG_RX = re.compile(
    rb"^<(\d+)>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) postern\[(\d+)\]: "
    rb"(.*)$", re.S)


class JsonLogTest(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_reject")

    def test_every_line_json_and_the_transaction_lines(self):
        with Server(plugins=plugins(),
                    config={"log_format": "json", "workers": 1}) as srv:
            c = srv.client()
            c.ehlo()
            # 1: accepted, after one refused recipient
            c.cmd_expect("MAIL FROM:<%s>" % SENDER, 250)
            c.cmd_expect("RCPT TO:<someone@elsewhere.test>", 550)
            c.cmd_expect("RCPT TO:<bob@example.com>", 250)
            c.cmd_expect("DATA", 354)
            body = b"Subject: log test\r\n\r\nhello\r\n"
            c.send(dot_stuff(body) + b".\r\n")
            r = c.expect(250)
            queued = re.search(r"queued as (\S+)", r.text).group(1)
            # 2: refused at MAIL
            c.cmd_expect("MAIL FROM:<refuse-me@remote.test>", 550)
            # 3: RSET
            c.cmd_expect("MAIL FROM:<rset@remote.test>", 250)
            c.cmd_expect("RCPT TO:<bob@example.com>", 250)
            c.cmd_expect("RSET", 250)
            # bytes that are not UTF-8, and control bytes, in a command
            # (logged at debug level)
            c.send(b"NOOP \xff\xfe\xc3( \x01\x7f\"\\\r\n")
            c.reply()
            # 4: the connection drops in the middle of DATA
            c.cmd_expect("MAIL FROM:<drop@remote.test>", 250)
            c.cmd_expect("RCPT TO:<bob@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(b"Subject: cut\r\n\r\n" + b"x" * 1000 + b"\r\n")
            time.sleep(0.2)  # let the bytes in before the close
            c.abort()
            # 5: QUIT in the middle of a transaction
            d = srv.client()
            d.ehlo()
            d.cmd_expect("MAIL FROM:<quit@remote.test>", 250)
            d.cmd_expect("QUIT", 221)
            d.close()
            self.assertTrue(wait_until(
                lambda: srv.count_log(r'"event":"transaction"') >= 5,
                IO_TIMEOUT), srv.log_tail())
            self.assertTrue(wait_until(
                lambda: srv.count_log(r'"event":"disconnect"') >= 2,
                IO_TIMEOUT), srv.log_tail())
            stored = srv.wait_messages(1)
            stored_size = os.path.getsize(stored[0])
            text = stopped_log(self, srv)
        lines = json_lines(self, text)
        events = [l["event"] for l in lines]
        for e in ("listening", "worker_started", "started", "connect",
                  "accepted", "relay_denied", "disconnect", "command",
                  "supervisor_stopped"):
            self.assertIn(e, events)
        # Worker lines carry the worker; the supervisor's do not.
        for l in lines:
            if l["event"] in ("connect", "transaction", "started"):
                self.assertEqual(l["worker"], 0, l)
            if l["event"] == "supervisor_ready":
                self.assertNotIn("worker", l)
        started = [l for l in lines if l["event"] == "worker_started"][0]
        self.assertIsInstance(started["pid"], int)
        # The bytes of the NOOP line, as far as JSON can carry them.
        noop = [l for l in lines if l["event"] == "command"
                and l.get("line", "").startswith("NOOP")]
        self.assertEqual(len(noop), 1, noop)
        self.assertEqual(noop[0]["line"],
                         "NOOP \ufffd\ufffd\ufffd( \x01\x7f\"\\")

        tx = [l for l in lines if l["event"] == "transaction"]
        self.assertEqual(len(tx), 5, tx)
        by_from = {l["from"]: l for l in tx}
        sid = tx[0]["session"]
        for l in tx:
            for key in ("id", "from", "rcpts", "rcpts_refused", "size",
                        "result", "code", "stage", "reason", "store",
                        "stored_id") + STAGES:
                self.assertIn(key, l)
            for key in STAGES:
                self.assertIsInstance(l[key], (int, float), l)
                self.assertGreaterEqual(l[key], 0, l)
            self.assertGreaterEqual(l["ms_total"], l["ms_store"])
            self.assertRegex(l["id"], r"^[0-9a-f]{16}$")
        self.assertEqual(len({l["id"] for l in tx}), 5)

        ok = [l for l in tx if l["result"] == "accepted"]
        self.assertEqual(len(ok), 1, tx)
        ok = ok[0]
        self.assertEqual(ok["from"], SENDER)  # the quote and backslash kept
        self.assertEqual(ok["session"], sid)
        self.assertEqual(ok["id"], queued)
        self.assertEqual((ok["rcpts"], ok["rcpts_refused"]), (1, 1))
        self.assertEqual(ok["size"], stored_size)
        self.assertEqual((ok["code"], ok["stage"]), (250, "store"))
        self.assertIsNone(ok["reason"])
        self.assertEqual(ok["store"], "90-store")
        self.assertEqual(ok["stored_id"], queued)
        # One look-up by the id follows the message.
        mine = [l["event"] for l in lines if l.get("id") == queued]
        self.assertEqual(mine[-2:], ["accepted", "transaction"])

        refused = by_from["refuse-me@remote.test"]
        self.assertEqual((refused["result"], refused["code"],
                          refused["stage"]), ("rejected", 550, "mail"))
        self.assertEqual((refused["rcpts"], refused["size"]), (0, 0))
        self.assertIsNone(refused["store"])

        rset = by_from["rset@remote.test"]
        self.assertEqual((rset["result"], rset["code"], rset["stage"],
                          rset["reason"]), ("aborted", None, "rcpt", "rset"))
        self.assertEqual(rset["rcpts"], 1)

        drop = by_from["drop@remote.test"]
        self.assertEqual((drop["result"], drop["code"], drop["stage"]),
                         ("aborted", None, "data"))
        self.assertIn(drop["reason"], ("client_closed", "io_error"))
        self.assertGreater(drop["size"], 1000)  # what had come
        self.assertGreater(drop["ms_data"], 0)

        quit_ = by_from["quit@remote.test"]
        self.assertEqual((quit_["result"], quit_["stage"], quit_["reason"]),
                         ("aborted", "mail", "quit"))
        self.assertNotEqual(quit_["session"], sid)
        # Each transaction line comes before its session's disconnect.
        for l in tx:
            i = lines.index(l)
            after = [m["event"] for m in lines[i + 1:]
                     if m.get("session") == l["session"]]
            self.assertIn("disconnect", after)

    def test_each_outcome(self):
        self.require_plugin("test_envelope")
        self.require_plugin("test_async")
        with Server(plugins=[
                ("10-envelope", {"module": "test_envelope"}),
                ("20-async", {"module": "test_async", "config": {"hooks": {
                    "data": {"result": "reject", "match": "data-no"},
                    "store": {"result": "tempfail", "code": 452,
                              "match": "store-later"}}}}),
                ("50-list", {"module": "rcpt_list",
                             "config": {"addresses": ["@example.com"]}}),
                ("90-store", store_plugin())],
                config={"log_format": "json", "workers": 1,
                        "limits": {"message_size": 1500}}) as srv:
            body = b"Subject: t\r\n\r\nbody\r\n"
            c = srv.client()
            c.ehlo()
            r = c.transaction("discard@example.org", ["bob@example.com"],
                              body)
            self.assertEqual(r.code, 250, r)
            r = c.transaction("store-later@remote.test", ["bob@example.com"],
                              body)
            self.assertEqual(r.code, 452, r)
            c.cmd_expect("MAIL FROM:<data-no@remote.test>", 250)
            c.cmd_expect("RCPT TO:<bob@example.com>", 250)
            c.cmd_expect("DATA", 554)
            c.cmd_expect("MAIL FROM:<bdat@remote.test>", 250)
            c.cmd_expect("RCPT TO:<bob@example.com>", 250)
            c.send(b"BDAT 2000 LAST\r\n" + b"y" * 2000)
            c.expect(552)
            c.cmd_expect("MAIL FROM:<close@remote.test>", 250)
            c.cmd_expect("RCPT TO:<close@example.com>", 554)
            self.assertTrue(c.wait_closed())
            c.close()
            self.assertTrue(wait_until(
                lambda: srv.count_log(r'"event":"transaction"') >= 5,
                IO_TIMEOUT), srv.log_tail())
            text = stopped_log(self, srv)
        tx = {l["from"]: l for l in json_lines(self, text)
              if l["event"] == "transaction"}
        got = {k: (v["result"], v["code"], v["stage"]) for k, v in tx.items()}
        self.assertEqual(got, {
            # dropped (DISCARD at MAIL) when the data was in: no message
            # or store hook ran
            "discard@example.org": ("discarded", 250, "data"),
            "store-later@remote.test": ("tempfailed", 452, "store"),
            "data-no@remote.test": ("rejected", 554, "data"),
            "bdat@remote.test": ("rejected", 552, "data"),
            "close@remote.test": ("rejected", 554, "rcpt"),
        })
        self.assertIsNone(tx["discard@example.org"]["stored_id"])
        self.assertIsNone(tx["store-later@remote.test"]["store"])
        self.assertGreater(tx["store-later@remote.test"]["size"], 0)
        self.assertEqual(tx["close@remote.test"]["rcpts_refused"], 1)

    def test_text_is_unchanged(self):
        # The default format: every line splits into key=value fields, and
        # the transaction line has the same fields.
        with Server(plugins=plugins(), config={"workers": 1}) as srv:
            with srv.smtplib() as s:
                s.sendmail("a@remote.test", ["bob@example.com"],
                           b"Subject: t\r\n\r\nbody\r\n")
            self.assertTrue(srv.wait_log(r" transaction id="),
                            srv.log_tail())
            text = stopped_log(self, srv)
        for line in postern_lines(text):
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT\S+Z (error|warning|"
                             r"info|debug) ([0-9a-f]{16}|-) \S+")
            event, fields = parse_text_line(line)
            if event == "transaction":
                self.assertEqual(fields["result"], "accepted")
                self.assertEqual(fields["code"], "250")
                self.assertEqual(fields["reason"], "-")
                self.assertEqual(fields["store"], "90-store")
                self.assertEqual(fields["worker"], "0")


    def test_line_times_follow_the_clock(self):
        # The date and time to the second are cached per second: a line a
        # second later must say so, and every line's time lies between the
        # test's own readings before and after (to the second).
        with Server(plugins=plugins(), config={"workers": 1}) as srv:
            before = int(time.time())
            with srv.smtplib() as s:
                s.noop()
            self.assertTrue(srv.wait_log(r" disconnect "), srv.log_tail())
            time.sleep(1.2)
            with srv.smtplib() as s:
                s.noop()
            self.assertTrue(wait_until(
                lambda: srv.count_log(r" disconnect ") >= 2, IO_TIMEOUT),
                srv.log_tail())
            after = int(time.time()) + 1  # once both lines are written
            text = stopped_log(self, srv)
        stamps = []
        for line in postern_lines(text):
            if " disconnect " not in line:
                continue
            stamp = line.split(" ", 1)[0]
            parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
            stamps.append(parsed.replace(
                tzinfo=datetime.timezone.utc).timestamp())
        self.assertEqual(len(stamps), 2, text)
        self.assertGreaterEqual(stamps[1] - stamps[0], 1.0, stamps)
        for t in stamps:
            self.assertGreaterEqual(t, before)
            self.assertLessEqual(t, after)


class SyslogTest(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_reject")

    def run_with_syslog(self, fmt):
        srv = Server(plugins=plugins(), start=False, config={
            "log_format": fmt, "log_target": "syslog",
            "log_facility": "local3", "workers": 1})
        sock = os.path.join(srv.tmp, "log.sock")
        srv.config["log_syslog_socket"] = sock
        with open(srv.config_path, "w") as f:
            json.dump(srv.config, f)
        rx = SyslogReceiver(sock)
        try:
            with srv:
                srv.start()
                with srv.smtplib() as s:
                    s.sendmail("a@remote.test", ["bob@example.com"],
                               b"Subject: t\r\n\r\nbody\r\n")
                self.assertTrue(wait_until(
                    lambda: any(b"transaction" in d for d in rx.received()),
                    IO_TIMEOUT))
                # An error line: a reload that fails.
                with open(srv.config_path, "w") as f:
                    f.write("{")
                srv.proc.send_signal(signal.SIGHUP)
                self.assertTrue(wait_until(
                    lambda: any(b"reload_failed" in d
                                for d in rx.received()), IO_TIMEOUT))
                supervisor = srv.proc.pid
                stderr = stopped_log(self, srv)
            return rx.received(), supervisor, stderr
        finally:
            rx.close()

    def parse(self, datagrams):
        out = []
        for d in datagrams:
            m = SYSLOG_RX.match(d)
            self.assertIsNotNone(m, d)
            self.assertFalse(d.endswith(b"\n"), d)
            out.append((int(m.group(1)), int(m.group(3)),
                        m.group(4).decode("utf-8")))
        return out

    def test_json_datagrams(self):
        datagrams, supervisor, stderr = self.run_with_syslog("json")
        got = self.parse(datagrams)
        severity = {"error": 3, "warning": 4, "info": 6, "debug": 7}
        events = {}
        for pri, pid, body in got:
            obj = json.loads(body)
            self.assertNotIn("time", obj)  # syslog stamps the line
            self.assertEqual(pri, 19 * 8 + severity[obj["level"]], body)
            if obj["event"] in ("connect", "started", "transaction"):
                self.assertNotEqual(pid, supervisor, body)  # the worker's
            elif obj["event"] in ("supervisor_ready", "reload_failed",
                                  "worker_started"):
                self.assertEqual(pid, supervisor, body)
            events.setdefault(obj["event"], []).append(obj)
        tx = events["transaction"]
        self.assertEqual(len(tx), 1)
        self.assertEqual((tx[0]["result"], tx[0]["code"], tx[0]["from"]),
                         ("accepted", 250, "a@remote.test"))
        self.assertEqual(events["reload_failed"][0]["level"], "error")
        self.assertIn("command", events)  # debug lines too
        # Each line goes one way: a line reaches stderr only when its
        # datagram could not be sent (a receiver too slow on a loaded
        # machine fills its buffer), never as a copy of one that was.
        self.assertNotIn('"event":"transaction"', stderr)
        sent = [json.loads(body) for _, _, body in got]
        for line in stderr.splitlines():
            if line.startswith("{"):
                obj = json.loads(line)
                obj.pop("time", None)
                self.assertNotIn(obj, sent, line)

    def test_text_datagrams_have_no_time(self):
        datagrams, supervisor, stderr = self.run_with_syslog("text")
        got = self.parse(datagrams)
        self.assertGreater(len(got), 5)
        tx = 0
        for pri, pid, body in got:
            m = re.match(r"^(error|warning|info|debug) ([0-9a-f]{16}|-) "
                         r"(\S+)( |$)", body)
            self.assertIsNotNone(m, body)
            self.assertEqual(pri & 7, {"error": 3, "warning": 4, "info": 6,
                                       "debug": 7}[m.group(1)])
            self.assertEqual(pri >> 3, 19)
            if m.group(3) == "transaction":
                tx += 1
                self.assertIn(" result=accepted code=250 ", body)
        self.assertEqual(tx, 1)
        self.assertNotIn(" transaction ", stderr)

    def test_no_receiver_falls_back_to_stderr(self):
        with Server(plugins=plugins(), config={
                "log_target": "syslog", "workers": 1,
                "log_syslog_socket": "/nonexistent/postern-test.sock"}) as srv:
            with srv.smtplib() as s:
                s.sendmail("a@remote.test", ["bob@example.com"],
                           b"Subject: t\r\n\r\nbody\r\n")
            self.assertTrue(srv.wait_log(r"^info [0-9a-f]{16} transaction "
                                         r"id=.* result=accepted "),
                            srv.log_tail())


class ReloadTest(PosternTestCase):
    def setUp(self):
        self.require_plugin("test_reject")

    def test_sighup_switches_to_json(self):
        with Server(plugins=plugins(), config={"workers": 1}) as srv:
            with srv.smtplib() as s:
                s.sendmail("before@remote.test", ["bob@example.com"],
                           b"Subject: t\r\n\r\nbody\r\n")
            self.assertTrue(srv.wait_log(r" transaction id="))
            srv.config["log_format"] = "json"
            with open(srv.config_path, "w") as f:
                json.dump(srv.config, f)
            srv.proc.send_signal(signal.SIGHUP)
            self.assertTrue(srv.wait_log(r'^\{.*"event":"reloaded"', 30),
                            srv.log_tail())
            with srv.smtplib() as s:
                s.sendmail("after@remote.test", ["bob@example.com"],
                           b"Subject: t\r\n\r\nbody\r\n")
            self.assertTrue(srv.wait_log(r'"event":"transaction".*after@'),
                            srv.log_tail())
            lines = postern_lines(stopped_log(self, srv))
        reloading = [i for i, l in enumerate(lines) if " reloading " in l]
        self.assertEqual(len(reloading), 1, lines)
        # Text up to the reload, JSON for what the new workers and the
        # supervisor wrote after it.
        for line in lines[:reloading[0] + 1]:
            parse_text_line(line)
        after = [l for l in lines[reloading[0] + 1:] if l.startswith("{")]
        events = [json.loads(l)["event"] for l in after]
        for e in ("started", "reloaded", "connect", "transaction"):
            self.assertIn(e, events)
        before = [l for l in lines if "before@" in l and "transaction" in l]
        self.assertEqual(len(before), 1)
        self.assertFalse(before[0].startswith("{"))


if __name__ == "__main__":
    main()
