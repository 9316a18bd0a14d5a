"""Where `meson install` puts things, and that the installed postern runs.

The build is installed into a temporary DESTDIR. The files must be in
Debian's places for the configured prefix (sbin, libdir/postern/modules,
include/postern, the pkg-config file, the systemd unit, sysconfdir/postern
with plugins.d, the man pages); the unit must pass `systemd-analyze
verify`; and the INSTALLED binary, on a copy of the INSTALLED example
configuration (its system paths moved under a temporary directory, a free
port), must take a message with smtplib and store it.
"""

import glob
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import urllib.request

from harness import (POSTERN_BIN, START_TIMEOUT, STOP_TIMEOUT, TIMER_GUARD,
                     PosternTestCase, free_port, is_listening, main,
                     maildir_messages, read_bytes, require_programs,
                     wait_until)

BUILD_DIR = os.path.dirname(POSTERN_BIN)
SOURCE_DIR = os.environ.get(
    "POSTERN_SOURCE_DIR",
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))))


def setUpModule():
    require_programs("meson", "systemd-analyze", "man")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          **kw)


def bundled_modules():
    """The names in modules/meson.build's bundled_modules lists."""
    import re
    with open(os.path.join(SOURCE_DIR, "modules", "meson.build")) as f:
        text = f.read()
    names = []
    for m in re.finditer(r"bundled_modules\s*\+?=\s*\[([^\]]*)\]", text):
        names += re.findall(r"'([a-z0-9_]+)'", m.group(1))
    return names


class InstallTest(PosternTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="postern-install-")
        cls.destdir = os.path.join(cls.tmp, "destdir")
        r = run(["meson", "install", "-C", BUILD_DIR, "--no-rebuild",
                 "--quiet", "--destdir", cls.destdir])
        if r.returncode != 0:
            raise AssertionError("meson install failed:\n" + r.stdout
                                 + r.stderr)
        r = run(["meson", "introspect", "--buildoptions", BUILD_DIR])
        opts = {o["name"]: o["value"] for o in json.loads(r.stdout)}
        prefix = opts["prefix"]
        # The installed (absolute) paths; os.path.join keeps an absolute
        # sysconfdir (/etc with prefix /usr) as it is.
        cls.dirs = {k: os.path.join(prefix, opts[k]) for k in
                    ("sbindir", "libdir", "includedir", "sysconfdir",
                     "mandir", "localstatedir")}
        cls.dirs["prefix"] = prefix
        cls.dirs["moduledir"] = os.path.join(cls.dirs["libdir"], "postern",
                                             "modules")
        cls.dirs["confdir"] = os.path.join(cls.dirs["sysconfdir"], "postern")
        cls.dirs["unitdir"] = os.path.join(prefix, "lib", "systemd", "system")

    @classmethod
    def tearDownClass(cls):
        if not os.environ.get("POSTERN_KEEP_TMP"):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def staged(self, *path):
        """A path of the installed tree, inside DESTDIR."""
        return self.destdir + os.path.join(*path)

    def assertInstalled(self, *path):
        p = self.staged(*path)
        self.assertTrue(os.path.isfile(p), "not installed: %s" %
                        os.path.join(*path))
        return p

    # --- where things are -------------------------------------------------

    def test_layout(self):
        d = self.dirs
        binary = self.assertInstalled(d["sbindir"], "postern")
        self.assertTrue(os.access(binary, os.X_OK))
        modules = bundled_modules()
        self.assertIn("store_file", modules)
        for name in modules:
            self.assertInstalled(d["moduledir"], name + ".so")
        for header in glob.glob(os.path.join(SOURCE_DIR, "include", "postern",
                                             "*.h")):
            self.assertInstalled(d["includedir"], "postern",
                                 os.path.basename(header))
        self.assertInstalled(d["libdir"], "pkgconfig", "postern.pc")
        self.assertInstalled(d["unitdir"], "postern.service")
        self.assertInstalled(d["unitdir"], "postern.socket")
        self.assertInstalled(d["prefix"], "lib", "sysusers.d", "postern.conf")
        self.assertInstalled(d["prefix"], "lib", "tmpfiles.d", "postern.conf")
        self.assertInstalled(d["confdir"], "postern.json")
        self.assertTrue(glob.glob(self.staged(d["confdir"], "plugins.d",
                                              "*.json")))
        for page in ("man8/postern.8", "man5/postern.json.5",
                     "man7/postern-modules.7"):
            self.assertInstalled(d["mandir"], page)

    def test_pkg_config_moduledir_is_the_installed_module_dir(self):
        pc = self.assertInstalled(self.dirs["libdir"], "pkgconfig",
                                  "postern.pc")
        r = run(["pkg-config", "--variable=moduledir", pc])
        self.assertEqual(r.stdout.strip(), self.dirs["moduledir"])

    def test_installed_binary_looks_in_the_installed_module_dir(self):
        # No module_path: the default. The binary is not where it was
        # installed for (DESTDIR), so the module is not found, and the
        # error names the directory it looked in.
        conf = os.path.join(self.tmp, "default-path")
        os.makedirs(os.path.join(conf, "plugins.d"), exist_ok=True)
        with open(os.path.join(conf, "plugins.d", "10-discard.json"),
                  "w") as f:
            json.dump({"module": "discard"}, f)
        with open(os.path.join(conf, "postern.json"), "w") as f:
            json.dump({"plugins_dir": os.path.join(conf, "plugins.d"),
                       "spool_dir": os.path.join(conf, "spool")}, f)
        r = run([self.staged(self.dirs["sbindir"], "postern"),
                 "--check-config", "-c", os.path.join(conf, "postern.json")])
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("discard.so not found in %s" % self.dirs["moduledir"],
                      r.stderr)
        self.assertInstalled(self.dirs["moduledir"], "discard.so")

    # --- the unit -----------------------------------------------------------

    def unit(self, name="postern.service"):
        with open(self.assertInstalled(self.dirs["unitdir"], name)) as f:
            return f.read()

    def unit_values(self, key, name="postern.service"):
        return [line.split("=", 1)[1] for line in self.unit(name).splitlines()
                if line.startswith(key + "=")]

    def test_socket_unit_listens_where_the_example_config_does(self):
        cfg, _ = self.example_config()
        wanted = ["[%s]:%d" % (l["address"], l["port"]) if ":" in l["address"]
                  else "%s:%d" % (l["address"], l["port"])
                  for l in cfg["listen"]]
        self.assertEqual(self.unit_values("ListenStream", "postern.socket"),
                         wanted)

    def test_unit_runs_the_installed_binary_on_the_example_config(self):
        self.assertEqual(self.unit_values("Type"), ["notify"])
        self.assertEqual(self.unit_values("ExecStart"),
                         ["%s -c %s" % (os.path.join(self.dirs["sbindir"],
                                                     "postern"),
                                        os.path.join(self.dirs["confdir"],
                                                     "postern.json"))])
        # the unit lets the workers write where the example config says
        writable = " ".join(self.unit_values("ReadWritePaths")).split()
        writable = [w.lstrip("-") for w in writable]
        cfg, plugins = self.example_config()
        wanted = [cfg["spool_dir"]] + [
            p["config"]["root"] for p in plugins.values()
            if p["module"] == "store_file"]
        for path in wanted:
            self.assertTrue(any(path == w or path.startswith(w + "/")
                                for w in writable),
                            "%s is not in ReadWritePaths %s" % (path, writable))
        caps = " ".join(self.unit_values("CapabilityBoundingSet")).split()
        self.assertIn("CAP_NET_BIND_SERVICE", caps)
        if cfg.get("user"):
            # the workers switch to "user" themselves
            self.assertIn("CAP_SETUID", caps)
            self.assertIn("CAP_SETGID", caps)

    def test_unit_verifies(self):
        # systemd-analyze verify checks the unit offline (no running
        # systemd): the syntax, that ExecStart is executable, that the
        # man pages of Documentation= open. Both point into DESTDIR here.
        unit_dir = os.path.join(self.tmp, "unit")
        os.makedirs(unit_dir, exist_ok=True)
        binary = os.path.join(self.dirs["sbindir"], "postern")
        text = self.unit().replace("ExecStart=" + binary,
                                   "ExecStart=" + self.staged(binary))
        self.assertIn(self.staged(binary), text)
        path = os.path.join(unit_dir, "postern.service")
        with open(path, "w") as f:
            f.write(text)
        socket_unit = os.path.join(unit_dir, "postern.socket")
        with open(socket_unit, "w") as f:
            f.write(self.unit("postern.socket"))
        r = run(["systemd-analyze", "verify", socket_unit, path],
                env=dict(os.environ,
                         MANPATH=self.staged(self.dirs["mandir"])))
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))

    # --- the installed binary on the installed example ----------------------

    def example_config(self):
        """The installed postern.json and plugins.d files, parsed."""
        confdir = self.staged(self.dirs["confdir"])
        with open(os.path.join(confdir, "postern.json")) as f:
            cfg = json.load(f)
        plugins = {}
        for path in sorted(glob.glob(os.path.join(confdir, "plugins.d",
                                                  "*.json"))):
            with open(path) as f:
                plugins[os.path.basename(path)] = json.load(f)
        return cfg, plugins

    def relocate(self, value, root):
        """Absolute paths in value moved under root (the example's /etc and
        /var are the machine's, not ours to write)."""
        if isinstance(value, str) and value.startswith("/"):
            return root + value
        if isinstance(value, list):
            return [self.relocate(v, root) for v in value]
        if isinstance(value, dict):
            return {k: self.relocate(v, root) for k, v in value.items()}
        return value

    def test_installed_binary_delivers_with_the_example_config(self):
        root = os.path.join(self.tmp, "root")
        cfg, plugins = self.example_config()
        self.assertTrue(os.path.isabs(cfg["plugins_dir"]))
        cfg = self.relocate(cfg, root)
        port = free_port()
        cfg["listen"] = [{"address": "127.0.0.1", "port": port,
                          "tls": "none"}]
        cfg["user"] = None  # no "postern" user on a build machine
        cfg["module_path"] = [self.staged(self.dirs["moduledir"])]
        cfg["dns"] = {"reverse": False}
        # the example serves metrics on loopback; a free port here
        self.assertEqual(cfg["metrics"]["address"], "127.0.0.1")
        cfg["metrics"]["port"] = free_port()
        os.makedirs(cfg["plugins_dir"])
        os.makedirs(os.path.dirname(cfg["spool_dir"]), exist_ok=True)
        for name, body in plugins.items():
            with open(os.path.join(cfg["plugins_dir"], name), "w") as f:
                json.dump(self.relocate(body, root), f)
        stores = [self.relocate(p["config"]["root"], root)
                  for p in plugins.values() if p["module"] == "store_file"]
        self.assertEqual(len(stores), 1, plugins)
        maildir = stores[0]
        config_path = os.path.join(root, "postern.json")
        with open(config_path, "w") as f:
            json.dump(cfg, f)

        log_path = os.path.join(self.tmp, "installed.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [self.staged(self.dirs["sbindir"], "postern"), "-c",
                 config_path], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.tmp)
        try:
            listening = wait_until(lambda: is_listening(port)
                                   or proc.poll() is not None,
                                   START_TIMEOUT)
            self.assertTrue(listening and proc.poll() is None,
                            self.log(log_path))
            body = "Subject: installed\r\n\r\nfrom the installed postern\r\n"
            rcpt = "postmaster@%s" % cfg["local_domains"][0]
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test",
                              timeout=TIMER_GUARD) as s:
                s.sendmail("sender@example.org", [rcpt], body)
            self.assertTrue(wait_until(lambda: maildir_messages(maildir),
                                       TIMER_GUARD), self.log(log_path))
            stored = read_bytes(maildir_messages(maildir)[0])
            self.assertTrue(stored.endswith(body.encode()), stored)
            self.assertTrue(os.path.isdir(cfg["spool_dir"]))
            self.check_metrics(cfg, delivered=1)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 0, self.log(log_path))

    def check_metrics(self, cfg, delivered):
        """The installed postern serves /metrics where the example config
        says (cfg is the running configuration), and it counted the
        `delivered` messages as stored."""
        url = "http://%s:%d/metrics" % (cfg["metrics"]["address"],
                                         cfg["metrics"]["port"])
        series = 'postern_messages_total{stage="store",result="accepted"}'

        def stored():
            try:
                with urllib.request.urlopen(url, timeout=TIMER_GUARD) as r:
                    self.assertEqual(r.headers["Content-Type"],
                                     "text/plain; version=0.0.4; "
                                     "charset=utf-8")
                    page = r.read().decode("utf-8")
            except OSError:
                return None
            m = re.search("^" + re.escape(series) + r" (\d+)$", page, re.M)
            return int(m.group(1)) if m else None

        self.assertTrue(wait_until(lambda: stored() == delivered,
                                   TIMER_GUARD), "%s: %r" % (series, stored()))

    @staticmethod
    def log(path):
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]


if __name__ == "__main__":
    main()
