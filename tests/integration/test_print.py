"""postern --print-hooks and --print-config.

--print-hooks: for a plugins.d with several files (hooks lists, modules
offering one hook or all of them, files out of contract order), every hook
point lists the instances in the order the daemon runs them, with the file
each comes from; a bad plugin file fails as --check-config does.

--print-config: every key has a row in docs/configuration.md, the defaults
printed are the ones that page documents, and the printed JSON fed back as
the main file prints the same again (for the defaults and for a config that
sets nested listener, tls, limits, dns and http keys).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    MODULE_DIR,
    POSTERN_BIN,
    SOURCE_DIR,
    TEST_PLUGIN_DIR,
    WRAPPER,
    PosternTestCase,
    free_port,
    main,
)

HOOKS = ["connect", "helo", "auth", "mail", "rcpt", "data", "message",
         "store", "reset", "disconnect"]

# What each module offers (its descriptor's handlers), written out here so
# the expected order does not come from postern itself.
OFFERED = {
    "test_async": set(HOOKS),
    "test_reject": {"mail", "rcpt"},
    "rcpt_list": {"rcpt"},
    "store_file": {"store"},
    "test_reset": {"reset"},
}


def run(args, cwd=None, timeout=120):
    p = subprocess.run(WRAPPER + [POSTERN_BIN] + args,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, cwd=cwd, timeout=timeout)
    if WRAPPER:  # without valgrind's own ==PID== lines
        p.stderr = b"".join(l for l in p.stderr.splitlines(True)
                            if not l.startswith(b"=="))
    return p


class Tree:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="postern-print-")
        self.plugins = os.path.join(self.dir, "plugins.d")
        self.spool = os.path.join(self.dir, "spool")
        self.maildir = os.path.join(self.dir, "maildir")
        for d in (self.plugins, self.spool, self.maildir):
            os.makedirs(d)
        self.config = {
            "hostname": "mx.print.test",
            "listen": [{"address": "127.0.0.1", "port": free_port()}],
            "spool_dir": self.spool,
            "plugins_dir": self.plugins,
            "module_path": [MODULE_DIR, TEST_PLUGIN_DIR],
        }
        self.path = os.path.join(self.dir, "postern.json")

    def write(self, config=None):
        with open(self.path, "w") as f:
            json.dump(self.config if config is None else config, f, indent=2)
        return self.path

    def plugin(self, name, body):
        path = os.path.join(self.plugins, name)
        with open(path, "w") as f:
            f.write(body if isinstance(body, str) else json.dumps(body))
        return path

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def parse_hook_map(text):
    """{hook: [(position, instance, module, file)]}, hooks in print order."""
    out = {}
    order = []
    current = None
    for line in text.splitlines():
        if not line.startswith(" "):
            current = line.strip()
            order.append(current)
            out[current] = []
        elif line.strip() == "(none)":
            pass
        else:
            m = re.match(r"^  (\d+)\. (\S+) +(\S+) +(\S.*)$", line)
            if not m:
                raise AssertionError("not a hook map line: %r" % line)
            out[current].append((int(m.group(1)), m.group(2), m.group(3),
                                 m.group(4)))
    return order, out


def docs_tables():
    """{section: {key: default cell}} of docs/configuration.md's main file
    tables ("Top level", "listen", "tls", "limits", "dns", "http")."""
    with open(os.path.join(SOURCE_DIR, "docs", "configuration.md")) as f:
        text = f.read()
    text = text[text.index("## The main file"):text.index("## plugins.d")]
    tables = {}
    section = None
    for line in text.splitlines():
        m = re.match(r"^###\s+(.+?)\s*$", line)
        if m:
            section = m.group(1)
            tables.setdefault(section, {})
            continue
        m = re.match(r"^\| `([a-z_0-9]+)` \|[^|]*\|([^|]*)\|", line)
        if m and section:
            tables[section][m.group(1)] = m.group(2).strip()
    return tables


def documented_default(cell):
    """The JSON value a default cell starts with (`30`, `"info"`, `[]`),
    or None when it is prose."""
    m = re.match(r"^`([^`]*)`", cell)
    if not m:
        return None
    try:
        return json.loads(m.group(1))
    except ValueError:
        return None


class PrintHooksTest(PosternTestCase):
    def setUp(self):
        for name in ("test_async", "test_reject", "test_reset"):
            self.require_plugin(name)
        self.tree = Tree()

    def tearDown(self):
        self.tree.cleanup()

    def test_every_hook_in_run_order_with_its_file(self):
        t = self.tree
        files = {
            # name: (module, hooks list or None, config)
            "10-async.json": ("test_async", ["reset", "mail", "connect"],
                              {"hooks": {}}),
            "20-reject.json": ("test_reject", None, {"match": "nobody"}),
            "30-list.json": ("rcpt_list", None,
                             {"addresses": ["@example.com"]}),
            "40-async.json": ("test_async", None, {"hooks": {}}),
            "90-store.json": ("store_file", None,
                              {"root": t.maildir, "fsync": False}),
            "95-reset.json": ("test_reset", ["reset"], {}),
            "05-reject.json": ("test_reject", ["rcpt"], {"match": "x"}),
        }
        paths = {}
        for name, (module, hooks, config) in files.items():
            body = {"module": module, "config": config}
            if hooks is not None:
                body["hooks"] = hooks
            paths[name] = t.plugin(name, body)
        # Not instances: ignored, as by the daemon.
        t.plugin("README", "not json")
        t.plugin(".hidden.json", "{")
        t.write()

        p = run(["--print-hooks", "-c", t.path])
        out = p.stdout.decode()
        self.assertEqual(p.returncode, 0, p.stderr.decode() + out)
        order, got = parse_hook_map(out)
        self.assertEqual(order, HOOKS)

        for hook in HOOKS:
            want = []
            for name in sorted(files):
                module, hooks, _ = files[name]
                on = set(hooks) if hooks is not None else OFFERED[module]
                if hook in on:
                    want.append((len(want) + 1, name[:-len(".json")],
                                 module, paths[name]))
            self.assertEqual(got[hook], want, "hook %s:\n%s" % (hook, out))
        # A few spelled out, in case the loop above is wrong.
        self.assertEqual([i for _, i, _, _ in got["rcpt"]],
                         ["05-reject", "20-reject", "30-list", "40-async"])
        self.assertEqual([i for _, i, _, _ in got["reset"]],
                         ["10-async", "40-async", "95-reset"])
        self.assertEqual([i for _, i, _, _ in got["helo"]], ["40-async"])

    def test_no_modules(self):
        self.tree.write()
        p = run(["--print-hooks", "-c", self.tree.path])
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertEqual(p.stdout.decode(),
                         "".join("%s\n  (none)\n" % h for h in HOOKS))

    def test_errors_as_check_config(self):
        t = self.tree
        bad = t.plugin("20-reject.json", {"module": "test_reject",
                                          "config": {"code": 250}})
        t.write()
        check = run(["--check-config", "-c", t.path])
        hooks = run(["--print-hooks", "-c", t.path])
        self.assertEqual(check.returncode, 1)
        self.assertEqual(hooks.returncode, 1)
        self.assertEqual(hooks.stdout, b"")
        self.assertIn(bad, hooks.stderr.decode())
        self.assertIn("$.config.code", hooks.stderr.decode())
        self.assertEqual(hooks.stderr, check.stderr)
        # A hook the module does not offer.
        os.unlink(bad)
        bad = t.plugin("30-list.json", {"module": "rcpt_list",
                                        "hooks": ["mail"],
                                        "config": {"addresses": ["@x.test"]}})
        check = run(["--check-config", "-c", t.path])
        hooks = run(["--print-hooks", "-c", t.path])
        self.assertEqual(hooks.returncode, 1)
        self.assertIn(bad, hooks.stderr.decode())
        self.assertEqual(hooks.stderr, check.stderr)

    def test_options_exclude_each_other(self):
        self.tree.write()
        p = run(["--print-hooks", "--print-config", "-c", self.tree.path])
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, b"")

    def test_help_names_both(self):
        p = run(["--help"])
        self.assertEqual(p.returncode, 0)
        self.assertIn(b"--print-hooks", p.stdout)
        self.assertIn(b"--print-config", p.stdout)


class PrintConfigTest(PosternTestCase):
    def setUp(self):
        self.tree = Tree()

    def tearDown(self):
        self.tree.cleanup()

    def print_config(self, path=None, cwd=None):
        args = ["--print-config"] + (["-c", path] if path else [])
        p = run(args, cwd=cwd or self.tree.dir)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return p.stdout.decode(), json.loads(p.stdout)

    def round_trip(self, text):
        """Fed back as the main file, the printout prints the same."""
        path = os.path.join(self.tree.dir, "printed.json")
        with open(path, "w") as f:
            f.write(text)
        again, _ = self.print_config(path)
        self.assertEqual(again, text)

    def test_defaults_are_the_documented_ones(self):
        text, cfg = self.print_config()
        tables = docs_tables()
        sections = {
            None: "Top level", "tls": "tls", "limits": "limits",
            "dns": "dns", "http": "http", "listen": "listen",
        }
        compared = 0

        def check(obj, where):
            nonlocal compared
            table = tables[sections[where]]
            for key, value in obj.items():
                self.assertIn(key, table, "%s.%s has no row in docs/"
                              "configuration.md" % (where or "$", key))
                doc = documented_default(table[key])
                if key == "listen" or isinstance(value, dict):
                    continue  # its own table
                if doc is None or isinstance(doc, dict):
                    continue
                self.assertEqual(value, doc, "%s.%s: printed %r, documented "
                                 "%r" % (where or "$", key, value, doc))
                compared += 1

        check(cfg, None)
        for nested in ("tls", "limits", "dns", "http"):
            check(cfg[nested], nested)
        for listener in cfg["listen"]:
            self.assertEqual(set(listener), set(tables["listen"]))
            check({k: v for k, v in listener.items()
                   if k not in ("address", "port")}, "listen")
        self.assertEqual(cfg["listen"][0]["address"], "127.0.0.1")
        self.assertEqual(cfg["listen"][0]["port"], 2525)
        # The documented defaults this test saw (docs rows it could read).
        self.assertGreaterEqual(compared, 40)
        # The machine-dependent ones, as documented.
        self.assertGreaterEqual(cfg["workers"], 1)
        self.assertLessEqual(cfg["workers"], 64)
        self.assertEqual(cfg["log_format"], "text")
        self.assertEqual(cfg["log_target"], "stderr")
        self.round_trip(text)

    def test_every_key_config_knows(self):
        # An unknown key is refused, so every printed key is one the
        # parser knows; and a key the parser knows but does not print
        # would not round trip: set each nested object's keys and compare.
        t = self.tree
        cert = os.path.join(t.dir, "c.pem")
        t.config.update({
            "listen": [
                {"address": "127.0.0.1", "port": 2526, "tls": "starttls",
                 "tls_required": True, "proxy_protocol": True,
                 "proxy_networks": ["10.1.2.3/8", "2001:db8::1/32"],
                 "proxy_timeout": 2.5},
                {"address": "::1", "port": 4650, "tls": "implicit",
                 "auth_required": True},
            ],
            "tls": {"certificates": [{"cert": cert, "key": cert}],
                    "client_ca": cert, "session_lifetime": 600},
            "limits": {"message_size": 1 << 40, "greet_pause": 0.5,
                       "exempt_networks": []},
            "local_domains": ["example.org."],
            "relay_networks": ["192.0.2.7"],
            "line_endings": "normalise",
            "log_format": "json",
            "log_target": "syslog",
            "log_facility": "local5",
            "log_syslog_socket": "/run/x.sock",
            "user": "nobody",
            "workers": 3,
            "dns": {"servers": ["127.0.0.1:5353", "[::1]:53"],
                    "reverse": False},
            "http": {"ca_file": None, "timeout": 2.25},
        })
        text, cfg = self.print_config(t.write())
        self.assertEqual(cfg["listen"][0]["proxy_networks"],
                         ["10.0.0.0/8", "2001:db8::/32"])
        self.assertEqual(cfg["listen"][0]["proxy_timeout"], 2.5)
        self.assertEqual(cfg["listen"][1]["proxy_timeout"], 5)
        self.assertEqual(cfg["listen"][1]["tls"], "implicit")
        self.assertEqual(cfg["tls"]["certificates"],
                         [{"cert": cert, "key": cert}])
        self.assertEqual(cfg["tls"]["client_ca"], cert)
        self.assertEqual(cfg["limits"]["message_size"], 1 << 40)
        self.assertEqual(cfg["limits"]["greet_pause"], 0.5)
        self.assertEqual(cfg["limits"]["exempt_networks"], [])
        self.assertEqual(cfg["relay_networks"], ["192.0.2.7/32"])
        self.assertEqual(cfg["log_facility"], "local5")
        self.assertEqual(cfg["log_syslog_socket"], "/run/x.sock")
        self.assertEqual(cfg["workers"], 3)
        self.assertEqual(cfg["dns"]["servers"], ["127.0.0.1:5353", "[::1]:53"])
        self.assertIsNone(cfg["http"]["ca_file"])
        # module_path: ours first, then the defaults, each once.
        self.assertEqual(cfg["module_path"][:2], [MODULE_DIR, TEST_PLUGIN_DIR])
        self.round_trip(text)
        # Every key given is printed with the value given.
        for key in ("hostname", "line_endings", "log_format", "log_target",
                    "user", "spool_dir", "plugins_dir"):
            self.assertEqual(cfg[key], t.config[key], key)

    def test_config_errors_as_check_config(self):
        t = self.tree
        t.config["log_format"] = "xml"
        t.write()
        p = run(["--print-config", "-c", t.path])
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b"")
        err = p.stderr.decode()
        self.assertIn(t.path, err)
        self.assertIn("$.log_format: expected one of \"text\", \"json\"", err)
        t.config["log_format"] = "text"
        t.config["log_syslog_socket"] = "/" + "s" * 120
        t.write()
        p = run(["--print-config", "-c", t.path])
        self.assertEqual(p.returncode, 1)
        self.assertIn("$.log_syslog_socket: expected a socket path",
                      p.stderr.decode())


if __name__ == "__main__":
    main()
