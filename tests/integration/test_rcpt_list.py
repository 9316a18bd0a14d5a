"""rcpt_list against the real daemon: its file is re-read off the event
loop, so recipients are answered while a re-read is stuck, and the new
list takes over once it is done."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    IO_TIMEOUT,
    PosternTestCase,
    Server,
    main,
    store_plugin,
    wait_until,
)


class RcptListReloadTest(PosternTestCase):
    def test_rcpt_answered_while_reload_blocked(self):
        """The file is replaced by a FIFO that the test holds open without
        writing: the re-read blocks, as on a stalled disk. Recipients
        meanwhile are judged on the list in use; the new list takes over
        once the test writes the new version and closes the FIFO."""
        srv = Server(plugins={
            "10-rcpt": {"module": "rcpt_list",
                        "config": {"file": "{tmp}/recipients"}},
            "20-store": store_plugin()},
            # One worker: the list and its re-read belong to one process's
            # instance, and the FIFO has room for one reader.
            config={"workers": 1}, start=False)
        path = os.path.join(srv.tmp, "recipients")
        with open(path, "w") as f:
            f.write("alice@example.com\n")
        wfd = None
        with srv:
            srv.start()
            # Listening comes before the modules are made: wait for the
            # loop, or create() could be the one reading the FIFO.
            self.assertIsNotNone(srv.wait_log(r" started ", IO_TIMEOUT),
                                 srv.log_tail())
            try:
                os.mkfifo(path + ".fifo", 0o600)
                os.rename(path + ".fifo", path)
                with srv.client() as b:
                    b.ehlo()
                    b.cmd_expect("MAIL FROM:<a@example.org>", 250)
                    # The first RCPT (or the timer) starts a check of the
                    # file, which opens the FIFO; opening it for writing
                    # succeeds once it did.
                    b.send("RCPT TO:<alice@example.com>\r\n")

                    def open_writer():
                        try:
                            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                        except OSError:
                            return None
                    wfd = wait_until(open_writer, IO_TIMEOUT)
                    self.assertIsNotNone(wfd, "the file was not re-read")
                    # The reload now waits for bytes that do not come.
                    r = b.reply()
                    self.assertEqual(r.code, 250, r)
                    r = b.cmd("RCPT TO:<bob@example.com>")
                    self.assertEqual((r.code, r.enhanced), (550, "5.1.1"), r)
                    with srv.client() as c:
                        c.cmd_expect("NOOP", 250)
                    self.assertEqual(srv.count_log(r" reloaded "), 0,
                                     srv.log_tail())

                    # The next version stays in place for later checks;
                    # the pending one reads the same text from the FIFO.
                    with open(path + ".new", "w") as f:
                        f.write("bob@example.com\n")
                    os.rename(path + ".new", path)
                    os.write(wfd, b"bob@example.com\n")
                    os.close(wfd)
                    wfd = None
                    self.assertIsNotNone(
                        srv.wait_log(r" reloaded .*entries=1", IO_TIMEOUT),
                        srv.log_tail())
                    r = b.cmd("RCPT TO:<bob@example.com>")
                    self.assertEqual(r.code, 250, r)
                    r = b.cmd("RCPT TO:<carol@example.com>")
                    self.assertEqual((r.code, r.enhanced), (550, "5.1.1"), r)
            finally:
                # Never leave a thread blocked on the FIFO: the daemon
                # could not stop.
                if wfd is None:
                    try:
                        wfd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                    except OSError:
                        pass
                if wfd is not None:
                    os.close(wfd)


if __name__ == "__main__":
    main()
