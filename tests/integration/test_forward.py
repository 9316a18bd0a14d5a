"""The forward module: postern relays each message to a next-hop MTA over
SMTP (libcurl), into real next hops:

- Postfix's smtp-sink, dumping each message to a file: the message arrives
  with its envelope; smtp-sink made to refuse RCPT with 550 or 451, or the
  end of data with 554, gives the client 550, 451 and 554 with the next
  hop's words; no next hop listening, or one that never greets within
  "timeout", gives 451 4.4.1; "starttls":
  "required" against a next hop without STARTTLS gives 451 4.7.5 and
  sends nothing;
- a client that vanishes while its message is being uploaded: the
  transfer is aborted, the next hop gets no message (not half of one),
  postern goes on, and nothing leaks (the harness fails on sanitizer
  reports);
- a next hop slow to answer the final dot (a Python SMTP server that holds
  its reply): while one client waits for it, another session of the same
  postern gets its greeting, EHLO and NOOP answered and a message through
  another route accepted, all before the slow reply is sent (the
  transfers run on the module's worker threads, not on the loop); postern
  stopped while a worker waits for that reply exits at once, cleanly;
- a second postern with store_file: what it stores is, after its own
  Received line, byte for byte what the first spooled (its Received line,
  then the body: dot lines, 8-bit bytes, past 64 KiB), with the original
  sender (the null sender too) and every recipient in its envelope, and
  SIZE declared; a recipient the second refuses at RCPT refuses the
  message (550, nothing stored); a message over the second's SIZE limit
  is refused at MAIL (552), before any byte of it is sent; kept-alive
  connections are reused;
- routes: a recipient of another route than the transaction's first gets
  452 4.5.3 and goes to its own next hop in the next transaction; a
  parent-domain route (".example.org") takes subdomains;
- TLS: "required" with the next hop's CA delivers over STARTTLS (with
  AUTH) and over smtps://, "required" without the CA refuses (451
  4.7.5), a refused login is 451 4.7.0, "opportunistic" encrypts
  without verifying.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    POSTERN_BIN,
    RECEIVED_RX,
    TIMER_GUARD,
    TIMER_SLACK,
    PosternTestCase,
    Server,
    dot_stuff,
    files_under,
    free_port,
    is_listening,
    main,
    read_bytes,
    read_envelope,
    require_programs,
    store_plugin,
    wait_until,
)

SMTP_SINK = "smtp-sink"


def setUpModule():
    require_programs(SMTP_SINK, "certtool")


def forward_plugin(routes, **config):
    cfg = {"routes": routes}
    cfg.update(config)
    return {"module": "forward", "config": cfg}


def relay_config(hostname):
    return {"hostname": hostname, "relay_networks": ["127.0.0.1"]}


def count_stuffed(message):
    """The dots a sender adds: one per line that begins with a dot."""
    return message.count(b"\r\n.") + (1 if message.startswith(b".") else 0)


class Sink:
    """Postfix's smtp-sink on 127.0.0.1, dumping each message it accepts
    into its own file; options are smtp-sink's (-f RCPT, -B reply...)."""

    def __init__(self, *options):
        self.tmp = tempfile.mkdtemp(prefix="postern-sink-")
        self.dump = os.path.join(self.tmp, "dump")
        os.mkdir(self.dump)
        self.out_path = os.path.join(self.tmp, "sink.out")
        self.port = free_port()
        user = []
        if os.geteuid() == 0:
            # smtp-sink refuses to run as root: it becomes nobody, who
            # must be able to write the dumps.
            os.chmod(self.tmp, 0o755)
            os.chmod(self.dump, 0o777)
            user = ["-u", "nobody"]
        self.argv = [SMTP_SINK, *user, "-v", "-d", self.dump + "/m.",
                     *options, "127.0.0.1:%d" % self.port, "64"]
        self.proc = None

    def __enter__(self):
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=self._out,
                                     stderr=subprocess.STDOUT)
        if not wait_until(lambda: is_listening(self.port)
                          or self.proc.poll() is not None, TIMER_GUARD) \
                or self.proc.poll() is not None:
            self.__exit__(None, None, None)
            raise AssertionError("smtp-sink did not start: %s"
                                 % self.output())
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def output(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @property
    def url(self):
        return "smtp://127.0.0.1:%d" % self.port

    def messages(self):
        """[(mail args, [rcpt args], content lines)] of the dumped
        messages (smtp-sink writes lines with LF, then an empty line)."""
        out = []
        for path in sorted(files_under(self.dump)):
            try:
                text = read_bytes(path).decode("utf-8", "replace")
            except FileNotFoundError:
                # smtp-sink removes the dump it began at MAIL when the
                # transaction ends without data: it may go between the
                # listing and the read.
                continue
            lines = text.split("\n")
            mail = [l[len("X-Mail-Args: "):] for l in lines
                    if l.startswith("X-Mail-Args: ")]
            rcpts = [l[len("X-Rcpt-Args: "):] for l in lines
                     if l.startswith("X-Rcpt-Args: ")]
            out.append((mail[0] if mail else None, rcpts, lines))
        return out


def send(srv, sender, rcpts, body, params=""):
    """One transaction with the raw client; the reply to the data."""
    with srv.client() as c:
        c.ehlo()
        c.cmd_expect("MAIL FROM:<%s>%s" % (sender, params), 250)
        for r in rcpts:
            c.cmd_expect("RCPT TO:<%s>" % r, 250)
        c.cmd_expect("DATA", 354)
        c.send(dot_stuff(body) + b".\r\n")
        reply = c.reply(timeout=TIMER_GUARD)
        c.cmd("QUIT")
        return reply


BODY = (b"From: alice@example.org\r\nSubject: forward\r\n\r\n"
        b".a line that begins with a dot\r\n..and two\r\n"
        b"8-bit: \xc3\xa9t\xc3\xa9\r\nlast line\r\n")


class SlowDotServer:
    """A minimal SMTP server on 127.0.0.1 that holds its reply to the final
    dot until release() (or `hold` seconds). events records, in order,
    what it did, and the test adds its own."""

    def __init__(self, events, hold=10.0):
        self.events = events
        self.hold = hold
        self.released = threading.Event()
        self.dot_seen = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self):
        return "smtp://127.0.0.1:%d" % self.port

    def release(self):
        self.released.set()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping = True
        self.released.set()
        self.thread.join(TIMER_GUARD)
        self.sock.close()
        return False

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(TIMER_GUARD)
                try:
                    self._session(conn.makefile("rwb"))
                except OSError:
                    pass

    def _session(self, f):
        def say(line):
            f.write(line + b"\r\n")
            f.flush()

        say(b"220 slow.test ESMTP")
        while True:
            line = f.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                say(b"250 slow.test")
            elif verb == b"DATA":
                say(b"354 go ahead")
                while f.readline() not in (b".\r\n", b""):
                    pass
                self.events.append("slow next hop: final dot read")
                self.dot_seen.set()
                self.released.wait(self.hold)
                self.events.append("slow next hop: 250 sent")
                say(b"250 2.0.0 Ok: queued as SLOW1")
            elif verb == b"QUIT":
                say(b"221 2.0.0 Bye")
                return
            else:
                say(b"250 2.0.0 Ok")


class SinkTest(PosternTestCase):
    def front(self, sink_or_url, **config):
        url = sink_or_url if isinstance(sink_or_url, str) else sink_or_url.url
        return Server(plugins={"10-forward": forward_plugin({"*": url},
                                                            **config)},
                      config=relay_config("a.postern.test"))

    def test_message_arrives_with_its_envelope(self):
        with Sink() as sink, self.front(sink) as srv:
            r = send(srv, "alice@example.org",
                     ["bob@example.net", "carol@example.com"], BODY)
            self.assertEqual(r.code, 250, r)
            self.assertEqual(r.enhanced, "2.0.0")
            self.assertIn("forwarded to 127.0.0.1:%d: 250 2.0.0 Ok"
                          % sink.port, r.text)
            msgs = wait_until(sink.messages, TIMER_GUARD)
            self.assertEqual(len(msgs), 1)
            mail, rcpts, lines = msgs[0]
            self.assertEqual(mail, "<alice@example.org>")
            self.assertEqual(rcpts, ["<bob@example.net>",
                                     "<carol@example.com>"])
            # EHLO with postern's own host name
            self.assertIn("X-Helo-Args: a.postern.test", lines)
            self.assertIn(".a line that begins with a dot", lines)
            self.assertIn("..and two", lines)
            self.assertIn("last line", lines)
            log = srv.log_text()
        self.assertRegex(log, r"forwarded id=\S+ peer=\"127\.0\.0\.1:%d\" "
                         r"rcpts=2" % sink.port)

    def assertRefused(self, sink_options, code, enhanced, words):
        with Sink(*sink_options) as sink, self.front(sink) as srv:
            r = send(srv, "alice@example.org", ["bob@example.net"], BODY)
            self.assertEqual(r.code, code, r)
            self.assertEqual(r.enhanced, enhanced, r)
            self.assertIn("next hop 127.0.0.1:%d said: " % sink.port, r.text)
            for w in words:
                self.assertIn(w, r.text)
            if "." not in sink_options:
                # libcurl ends with QUIT, without DATA after a refused
                # RCPT; smtp-sink drops the dump it began at MAIL.
                self.assertTrue(wait_until(
                    lambda: "smtp-sink: QUIT" in sink.output(), TIMER_GUARD))
                self.assertNotIn("smtp-sink: DATA", sink.output())
                self.assertTrue(wait_until(lambda: not sink.messages(),
                                           TIMER_GUARD), sink.messages())
            # the session goes on
            with srv.client() as c:
                c.ehlo()
                c.cmd_expect("NOOP", 250)
            return r

    def test_rcpt_refused_550(self):
        self.assertRefused(["-f", "RCPT", "-B", "550 5.1.1 Error: no user"],
                           550, "5.1.1",
                           ["550 5.1.1 Error: no user",
                            "in reply to RCPT TO:<bob@example.net>"])

    def test_rcpt_deferred_451(self):
        self.assertRefused(["-r", "RCPT", "-b", "451 4.3.0 Error: later"],
                           451, "4.3.0",
                           ["451 4.3.0 Error: later",
                            "in reply to RCPT TO:<bob@example.net>"])

    def test_end_of_data_refused_554(self):
        self.assertRefused(["-f", ".", "-B", "554 5.7.1 Error: no thanks"],
                           554, "5.7.1",
                           ["554 5.7.1 Error: no thanks",
                            "in reply to the end of the message"])

    def test_next_hop_down_is_451(self):
        port = free_port()  # nothing listens there
        with self.front("smtp://127.0.0.1:%d" % port) as srv:
            r = send(srv, "alice@example.org", ["bob@example.net"], BODY)
            self.assertEqual(r.code, 451, r)
            self.assertEqual(r.enhanced, "4.4.1")
            self.assertIn("127.0.0.1:%d" % port, r.text)
            log = srv.log_text()
        self.assertIn("reason=unreachable", log)

    def test_silent_next_hop_times_out(self):
        # A next hop that accepts the connection and never greets.
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            url = "smtp://127.0.0.1:%d" % silent.getsockname()[1]
            with self.front(url, timeout=1) as srv:
                start = time.monotonic()
                r = send(srv, "alice@example.org", ["bob@example.net"], BODY)
                waited = time.monotonic() - start
                self.assertEqual(r.code, 451, r)
                self.assertEqual(r.enhanced, "4.4.1")
                self.assertIn("did not answer in time", r.text)
                log = srv.log_text()
        self.assertGreaterEqual(waited, 1.0 - TIMER_SLACK)
        self.assertIn("reason=timeout", log)

    def test_tls_required_but_not_offered(self):
        with Sink() as sink, self.front(sink, starttls="required") as srv:
            r = send(srv, "alice@example.org", ["bob@example.net"], BODY)
            self.assertEqual(r.code, 451, r)
            self.assertEqual(r.enhanced, "4.7.5")
            self.assertIn("TLS is required", r.text)
            self.assertEqual(sink.messages(), [])
            self.assertNotIn("MAIL FROM", sink.output())

    def test_client_gone_while_uploading(self):
        # The next hop reads nothing for 3 s after DATA, through a small
        # TCP window: the upload is stuck half way when the client goes.
        big = (b"Subject: big\r\n\r\n"
               + b"a line of the message body, long enough to count\r\n"
               * 80000)
        with Sink("-H", "3", "-T", "4096") as sink, self.front(sink) as srv:
            c = srv.client()
            c.ehlo()
            c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
            c.cmd_expect("RCPT TO:<bob@example.net>", 250)
            c.cmd_expect("DATA", 354)
            c.send(big + b".\r\n")
            self.assertTrue(wait_until(
                lambda: "smtp-sink: DATA" in sink.output(), TIMER_GUARD),
                sink.output())
            c.abort()
            self.assertTrue(wait_until(
                lambda: "client_gone=yes" in srv.log_text(), TIMER_GUARD))
            # A message sent afterwards arrives: by then the next hop has
            # ended the first session (its delay began earlier).
            r = send(srv, "alice@example.org", ["carol@example.net"], BODY)
            self.assertEqual(r.code, 250, r)
            msgs = wait_until(sink.messages, TIMER_GUARD)
            self.assertEqual([m[1] for m in msgs], [["<carol@example.net>"]])
            log = srv.log_text()
        self.assertIn("reason=cancelled", log)


def read_stored(srv, timeout=TIMER_GUARD):
    msgs = srv.wait_messages(1, timeout=timeout)
    return [(read_bytes(m), read_envelope(srv.maildir, m)) for m in msgs]


class SlowNextHopTest(PosternTestCase):
    def test_slow_final_dot_stalls_only_its_session(self):
        events = []
        with SlowDotServer(events) as slow, Sink() as sink, \
                Server(plugins={"10-forward": forward_plugin(
                    {"slow.test": slow.url, "*": sink.url})},
                    config=relay_config("a.postern.test")) as srv:
            slow_reply = []

            def slow_client():
                slow_reply.append(
                    send(srv, "alice@example.org", ["bob@slow.test"], BODY))

            t = threading.Thread(target=slow_client, daemon=True)
            t.start()
            try:
                self.assertTrue(slow.dot_seen.wait(TIMER_GUARD))
                # The slow next hop now holds its reply: another session
                # is served meanwhile, and its message goes through.
                with srv.client() as c:
                    events.append("other session: greeted")
                    c.ehlo()
                    c.cmd_expect("NOOP", 250)
                    events.append("other session: EHLO and NOOP answered")
                    c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                    c.cmd_expect("RCPT TO:<carol@example.net>", 250)
                    c.cmd_expect("DATA", 354)
                    c.send(dot_stuff(BODY) + b".\r\n")
                    r = c.reply(timeout=TIMER_GUARD)
                    self.assertEqual(r.code, 250, r)
                    events.append("other session: message accepted")
            finally:
                slow.release()
                t.join(TIMER_GUARD)
            self.assertEqual(len(slow_reply), 1)
            self.assertEqual(slow_reply[0].code, 250, slow_reply[0])
            self.assertIn("Ok: queued as SLOW1", slow_reply[0].text)
            msgs = wait_until(sink.messages, TIMER_GUARD)
            self.assertEqual([m[1] for m in msgs], [["<carol@example.net>"]])
        self.assertEqual(events, [
            "slow next hop: final dot read",
            "other session: greeted",
            "other session: EHLO and NOOP answered",
            "other session: message accepted",
            "slow next hop: 250 sent",
        ])


    def test_stop_while_a_transfer_waits_for_the_dot_reply(self):
        # postern stops (SIGTERM, then SIGTERM again: now) while a worker
        # thread waits for the next hop's reply to the final dot: the
        # transfer is aborted, its connection cut, the threads joined,
        # nothing leaks, and the stop waits neither for the next hop nor
        # for "timeout".
        events = []
        with SlowDotServer(events, hold=TIMER_GUARD) as slow:
            srv = Server(plugins={"10-forward": forward_plugin(
                {"*": slow.url}, timeout=300)},
                config=relay_config("a.postern.test"))
            with srv:
                def client():
                    try:
                        send(srv, "alice@example.org", ["bob@slow.test"],
                             BODY)
                    except Exception:  # the shutdown closes the session
                        pass

                t = threading.Thread(target=client, daemon=True)
                t.start()
                self.assertTrue(slow.dot_seen.wait(TIMER_GUARD))
                srv.proc.send_signal(signal.SIGTERM)
                self.assertTrue(wait_until(
                    lambda: "draining" in srv.log_text(), TIMER_GUARD))
                problems = srv.stop()
                t.join(TIMER_GUARD)
                self.assertEqual(problems, [])
                self.assertEqual(events, ["slow next hop: final dot read"])


class NextHopPosternTest(PosternTestCase):
    """A second postern (store_file) is the next hop."""

    def next_hop(self, plugins=None, **kw):
        plugins = plugins or {"90-store": store_plugin()}
        return Server(plugins=plugins, config=relay_config("b.postern.test"),
                      **kw)

    def front(self, routes, **config):
        return Server(plugins={"10-forward": forward_plugin(routes, **config)},
                      config=relay_config("a.postern.test"))

    def split_hops(self, data, body):
        """(B's Received line, what A sent) from what B stored."""
        self.assertTrue(data.endswith(body), data[-200:])
        cut = data.index(b"\r\nReceived: ") + 2
        received_b, from_a = data[:cut], data[cut:]
        # B added one header line (folded), nothing else
        self.assertRegex(received_b,
                         rb"^Received: [^\r\n]*(\r\n[ \t][^\r\n]*)*\r\n$")
        return received_b.decode("ascii"), from_a

    def test_byte_exact_with_envelope(self):
        # Past 64 KiB, with 40 lines beginning with a dot in the first
        # 64 KiB and exactly 40 bytes after them: libcurl 7.88, given the
        # plain size, would stop reading 40 bytes short.
        head = (b"From: alice@example.org\r\nSubject: exact\r\n\r\n"
                + b".dot\r\n" * 40 + b"bytes: \x00\x01\xff\xc3\xa9\r\n")
        fill = 65536 - len(head) - 2
        tail = b"the last forty bytes of the message!!!\r\n"
        body = head + b"x" * fill + b"\r\n" + tail
        self.assertEqual(len(body), 65536 + 40)
        rcpts = ["bob@example.net", "carol@example.com", "dave@example.org"]
        with self.next_hop() as b, \
                self.front({"*": "smtp://127.0.0.1:%d" % b.port}) as a:
            r = send(a, "alice@example.org", rcpts, body)
            self.assertEqual(r.code, 250, r)
            self.assertIn("forwarded to 127.0.0.1:%d: 250 2.0.0 Ok: queued as"
                          % b.port, r.text)
            [(data, env)] = read_stored(b)
        received_b, from_a = self.split_hops(data, body)
        # B's Received: from A, which said EHLO with its host name
        m = RECEIVED_RX.match(re.sub(r"\r\n[ \t]+", " ", received_b).strip())
        self.assertIsNotNone(m, received_b)
        self.assertEqual(m.group("helo"), "a.postern.test")
        self.assertEqual(m.group("by"), "b.postern.test")
        # What A sent: its own Received line, then the body, exactly.
        self.assertTrue(from_a.startswith(b"Received: from client.test "))
        self.assertIn(b"by a.postern.test (postern)", from_a)
        self.assertTrue(from_a.endswith(body))
        self.assertEqual(from_a.count(b"\r\nReceived: "), 0)
        self.assertEqual(env["mail_from"], "alice@example.org")
        self.assertEqual(env["rcpt_to"], rcpts)
        self.assertEqual(env["helo"], "a.postern.test")
        # SIZE: the message plus the dots the sender added.
        self.assertEqual(env["mail_params"].get("SIZE"),
                         str(len(from_a) + count_stuffed(from_a)))

    def test_null_sender_and_smtputf8(self):
        with self.next_hop() as b, \
                self.front({"*": "smtp://127.0.0.1:%d" % b.port}) as a:
            r = send(a, "", ["bob@example.net"], BODY)
            self.assertEqual(r.code, 250, r)
            r = send(a, "j\u00f6rg@example.org", ["bob@example.net"], BODY,
                     params=" SMTPUTF8")
            self.assertEqual(r.code, 250, r)
            stored = [(read_bytes(m), read_envelope(b.maildir, m))
                      for m in b.wait_messages(2, timeout=TIMER_GUARD)]
        self.assertEqual(len(stored), 2)
        envs = sorted((e for _, e in stored), key=lambda e: e["mail_from"])
        self.assertEqual(envs[0]["mail_from"], "")
        self.assertEqual(envs[0]["rcpt_to"], ["bob@example.net"])
        self.assertNotIn("SMTPUTF8", envs[0]["mail_params"])
        self.assertEqual(envs[1]["mail_from"], "j\u00f6rg@example.org")
        self.assertIn("SMTPUTF8", envs[1]["mail_params"])
        for data, _ in stored:
            self.split_hops(data, BODY)

    def test_next_hop_refuses_one_recipient(self):
        # B knows good@example.org only: it refuses bad@ at RCPT, so A's
        # transfer stops before DATA and the whole message is refused.
        plugins = {"10-rcpt": {"module": "rcpt_list",
                               "config": {"addresses": ["good@example.org"]}},
                   "90-store": store_plugin()}
        with self.next_hop(plugins) as b, \
                self.front({"*": "smtp://127.0.0.1:%d" % b.port}) as a:
            r = send(a, "alice@example.org",
                     ["good@example.org", "bad@example.org"], BODY)
            self.assertEqual(r.code, 550, r)
            self.assertEqual(r.enhanced, "5.1.1")
            self.assertIn("in reply to RCPT TO:<bad@example.org>", r.text)
            self.assertEqual(b.messages(), [])
            self.assertNotRegex(b.log_text(), r'(?i)command line="data"')
            self.assertRegex(b.log_text(),
                             r'command line="RCPT TO:<bad@example.org>"')

    def test_size_refused_before_the_body(self):
        # B takes 2048 bytes at most and says so in EHLO: A declares SIZE,
        # B refuses MAIL with 552, and no byte of the body is sent.
        body = b"Subject: big\r\n\r\n" + b"0123456789abcdef\r\n" * 200
        b = self.next_hop()
        b.config["limits"] = {"message_size": 2048}
        with open(b.config_path, "w") as f:
            json.dump(b.config, f)
        with b, self.front({"*": "smtp://127.0.0.1:%d" % b.port}) as a:
            r = send(a, "alice@example.org", ["bob@example.net"], body)
            self.assertEqual(r.code, 552, r)
            self.assertEqual(r.enhanced, "5.3.4")
            self.assertIn("in reply to MAIL FROM:<alice@example.org> SIZE=",
                          r.text)
            self.assertNotRegex(b.log_text(), r'(?i)command line="data"')
            self.assertEqual(b.messages(), [])

    def test_connections_are_reused(self):
        with self.next_hop() as b, \
                self.front({"*": "smtp://127.0.0.1:%d" % b.port}) as a:
            with a.client() as c:
                c.ehlo()
                for i in range(5):
                    c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                    c.cmd_expect("RCPT TO:<bob%d@example.net>" % i, 250)
                    c.cmd_expect("DATA", 354)
                    c.send(dot_stuff(BODY) + b".\r\n")
                    self.assertEqual(c.reply(timeout=TIMER_GUARD).code, 250)
            self.assertEqual(len(b.wait_messages(5, timeout=TIMER_GUARD)), 5)
            sessions = len(re.findall(r" connect client=", b.log_text()))
        self.assertGreaterEqual(sessions, 1)
        self.assertLess(sessions, 5)

    def test_route_split_452(self):
        with self.next_hop() as b1, self.next_hop() as b2, \
                self.front({"example.org": "smtp://127.0.0.1:%d" % b1.port,
                            ".example.org": "smtp://127.0.0.1:%d" % b1.port,
                            "*": "smtp://127.0.0.1:%d" % b2.port}) as a:
            with a.client() as c:
                c.ehlo()
                c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                c.cmd_expect("RCPT TO:<a@example.org>", 250)
                r = c.cmd("RCPT TO:<b@example.net>")
                self.assertEqual((r.code, r.enhanced), (452, "4.5.3"))
                c.cmd_expect("RCPT TO:<c@sub.Example.org>", 250)
                c.cmd_expect("DATA", 354)
                c.send(dot_stuff(BODY) + b".\r\n")
                self.assertEqual(c.reply(timeout=TIMER_GUARD).code, 250)
                # the client sends the deferred recipient again
                c.cmd_expect("MAIL FROM:<alice@example.org>", 250)
                c.cmd_expect("RCPT TO:<b@example.net>", 250)
                r = c.cmd("RCPT TO:<d@example.org>")
                self.assertEqual((r.code, r.enhanced), (452, "4.5.3"))
                c.cmd_expect("DATA", 354)
                c.send(dot_stuff(BODY) + b".\r\n")
                self.assertEqual(c.reply(timeout=TIMER_GUARD).code, 250)
            [(_, env1)] = read_stored(b1)
            [(_, env2)] = read_stored(b2)
        self.assertEqual(env1["rcpt_to"], ["a@example.org",
                                           "c@sub.Example.org"])
        self.assertEqual(env2["rcpt_to"], ["b@example.net"])


class Pki:
    """A CA and a certificate for 127.0.0.1, made with certtool."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="postern-fw-pki-")
        self.ca = os.path.join(self.dir, "ca.pem")
        self.cert = os.path.join(self.dir, "srv.pem")
        self.key = os.path.join(self.dir, "srv.key")
        ca_key = os.path.join(self.dir, "ca.key")
        with open(os.path.join(self.dir, "ca.tmpl"), "w") as f:
            f.write("cn = postern forward test CA\nca\ncert_signing_key\n"
                    "expiration_days = 2\n")
        with open(os.path.join(self.dir, "srv.tmpl"), "w") as f:
            f.write("cn = 127.0.0.1\nip_address = 127.0.0.1\n"
                    "tls_www_server\nencryption_key\nsigning_key\n"
                    "expiration_days = 2\n")
        self._tool("--generate-privkey", "--outfile", ca_key)
        self._tool("--generate-self-signed", "--load-privkey", ca_key,
                   "--template", os.path.join(self.dir, "ca.tmpl"),
                   "--outfile", self.ca)
        self._tool("--generate-privkey", "--outfile", self.key)
        self._tool("--generate-certificate", "--load-privkey", self.key,
                   "--load-ca-certificate", self.ca, "--load-ca-privkey",
                   ca_key, "--template", os.path.join(self.dir, "srv.tmpl"),
                   "--outfile", self.cert)

    def _tool(self, *args):
        subprocess.run(["certtool", *args], check=True, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def hash_password(password):
    r = subprocess.run([POSTERN_BIN, "hash-password", "sha512crypt"],
                       input=password.encode() + b"\n", capture_output=True,
                       timeout=60)
    if r.returncode != 0:
        raise AssertionError("hash-password: %s" % r.stderr)
    return r.stdout.decode("ascii").strip()


class TlsTest(PosternTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = Pki()

    @classmethod
    def tearDownClass(cls):
        cls.pki.cleanup()

    def next_hop(self, auth=False, tls="starttls"):
        plugins = {"90-store": store_plugin()}
        listener = {"address": "127.0.0.1", "tls": tls}
        if auth:
            path = os.path.join(self.pki.dir, "passwd")
            with open(path, "w") as f:
                f.write("relay:%s\n" % hash_password("pa55 word"))
            plugins["10-auth"] = {"module": "auth_file",
                                  "config": {"file": path}}
        srv = Server(plugins=plugins, config=relay_config("b.postern.test"))
        listener["port"] = srv.port
        srv.config["listen"] = [listener]
        srv.config["tls"] = {"certificates": [{"cert": self.pki.cert,
                                               "key": self.pki.key}]}
        if auth:
            srv.config["relay_networks"] = []
        with open(srv.config_path, "w") as f:
            json.dump(srv.config, f)
        return srv

    def front(self, port, scheme="smtp", **config):
        return Server(plugins={"10-forward": forward_plugin(
            {"*": "%s://127.0.0.1:%d" % (scheme, port)}, **config)},
            config=relay_config("a.postern.test"))

    def test_required_verified_with_auth(self):
        with self.next_hop(auth=True) as b, \
                self.front(b.port, starttls="required", ca_file=self.pki.ca,
                           auth={"user": "relay",
                                 "password": "pa55 word"}) as a:
            r = send(a, "alice@example.org", ["bob@example.net"], BODY)
            self.assertEqual(r.code, 250, r)
            [(_, env)] = read_stored(b)
        self.assertTrue(env["tls"])
        self.assertEqual(env["auth_user"], "relay")

    def test_login_refused(self):
        with self.next_hop(auth=True) as b, \
                self.front(b.port, starttls="required", ca_file=self.pki.ca,
                           auth={"user": "relay",
                                 "password": "wrong"}) as a:
            r = send(a, "alice@example.org", ["bob@example.net"], BODY)
            self.assertEqual(r.code, 451, r)
            self.assertEqual(r.enhanced, "4.7.0")
            self.assertEqual(b.messages(), [])

    def test_required_refuses_an_unverified_next_hop(self):
        with self.next_hop() as b, \
                self.front(b.port, starttls="required") as a:
            r = send(a, "alice@example.org", ["bob@example.net"], BODY)
            self.assertEqual(r.code, 451, r)
            self.assertEqual(r.enhanced, "4.7.5")
            self.assertEqual(b.messages(), [])

    def test_smtps_route(self):
        with self.next_hop(tls="implicit") as b, \
                self.front(b.port, scheme="smtps", starttls="required",
                           ca_file=self.pki.ca) as a:
            r = send(a, "alice@example.org", ["bob@example.net"], BODY)
            self.assertEqual(r.code, 250, r)
            [(data, env)] = read_stored(b)
        self.assertTrue(env["tls"])
        self.assertTrue(data.endswith(BODY))

    def test_opportunistic_encrypts_without_verifying(self):
        with self.next_hop() as b, self.front(b.port) as a:
            r = send(a, "alice@example.org", ["bob@example.net"], BODY)
            self.assertEqual(r.code, 250, r)
            [(_, env)] = read_stored(b)
        self.assertTrue(env["tls"])


if __name__ == "__main__":
    main()
