"""The command line: --version, --help, and --check-config on good and bad
configurations; every error names the file and the JSON path (or line and
column for a JSON syntax error)."""

import json
import os
import pwd
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
    PosternTestCase,
    free_port,
    main,
)


def project_version():
    with open(os.path.join(SOURCE_DIR, "meson.build")) as f:
        m = re.search(r"version\s*:\s*'([^']+)'", f.read())
    return m.group(1) if m else None


class Tree:
    """A temporary main config plus plugins.d, for --check-config."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="postern-cli-")
        self.plugins = os.path.join(self.dir, "plugins.d")
        self.spool = os.path.join(self.dir, "spool")
        os.makedirs(self.plugins)
        os.makedirs(self.spool)
        self.config = {
            "hostname": "mx.cli.test",
            "listen": [{"address": "127.0.0.1", "port": free_port(),
                        "tls": "none"}],
            "spool_dir": self.spool,
            "plugins_dir": self.plugins,
            "module_path": [MODULE_DIR, TEST_PLUGIN_DIR],
        }
        self.path = os.path.join(self.dir, "postern.json")

    def write(self, text=None):
        with open(self.path, "w") as f:
            f.write(text if text is not None
                    else json.dumps(self.config, indent=2))
        return self.path

    def plugin(self, name, body):
        path = os.path.join(self.plugins, name + ".json")
        with open(path, "w") as f:
            f.write(body if isinstance(body, str) else json.dumps(body))
        return path

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def run(args, cwd=None, timeout=20):
    return subprocess.run([POSTERN_BIN] + args, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=cwd, timeout=timeout)


class CliTest(PosternTestCase):
    def setUp(self):
        self.tree = Tree()

    def tearDown(self):
        self.tree.cleanup()

    def check(self):
        self.tree.write()
        return run(["--check-config", "-c", self.tree.path])

    def assertCheckFails(self, file, *needles):
        p = run(["--check-config", "-c", self.tree.path])
        err = p.stderr.decode("utf-8", "replace")
        self.assertNotEqual(p.returncode, 0, "accepted a bad config: " + err)
        self.assertLess(p.returncode, 128, "crashed: %d %s" % (p.returncode, err))
        self.assertIn(file, err)
        for n in needles:
            if hasattr(n, "search"):
                self.assertRegex(err, n)
            else:
                self.assertIn(n, err)
        self.assertNotIn("AddressSanitizer", err)
        return err

    # --- informational -----------------------------------------------------

    def test_version(self):
        p = run(["--version"])
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        version = project_version()
        self.assertIsNotNone(version)
        self.assertIn(version, out)
        self.assertIn("postern", out.lower())

    def test_help(self):
        p = run(["--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("--check-config", out)
        self.assertIn("-c", out)
        self.assertIn("--version", out)

    def test_unknown_option(self):
        p = run(["--no-such-option"])
        self.assertNotEqual(p.returncode, 0)
        self.assertLess(p.returncode, 128)
        self.assertTrue(p.stderr.strip(), "no message for a bad option")

    def test_missing_config_file(self):
        missing = os.path.join(self.tree.dir, "nope.json")
        p = run(["--check-config", "-c", missing])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(missing, p.stderr.decode())

    # --- good configs ------------------------------------------------------

    def test_good_config(self):
        self.tree.config["limits"] = {"message_size": 1048576,
                                      "recipients": 50, "errors": 5,
                                      "exempt_networks": ["127.0.0.0/8"]}
        self.tree.config["local_domains"] = ["example.com"]
        self.tree.config["relay_networks"] = ["10.0.0.0/8", "::1"]
        self.tree.config["line_endings"] = "normalise"
        self.tree.plugin("10-rcpt", {"module": "rcpt_list",
                                     "config": {"addresses": ["a@example.com"]}})
        self.tree.plugin("20-store", {"module": "store_file",
                                      "config": {"root": os.path.join(
                                          self.tree.dir, "mail")}})
        self.tree.plugin("30-discard", {"module": "discard",
                                        "hooks": ["store"]})
        p = self.check()
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        # validating must not start anything or create the store root
        self.assertFalse(os.path.exists(os.path.join(self.tree.dir, "mail")))

    def test_builtin_defaults(self):
        """Without -c: plugins.d and var/spool relative to the cwd."""
        cwd = os.path.join(self.tree.dir, "cwd")
        os.makedirs(os.path.join(cwd, "plugins.d"))
        os.makedirs(os.path.join(cwd, "var", "spool"))
        p = run(["--check-config"], cwd=cwd)
        self.assertEqual(p.returncode, 0, p.stderr.decode())

    def test_non_json_files_ignored(self):
        with open(os.path.join(self.tree.plugins, "README.txt"), "w") as f:
            f.write("not json, not a plugin\n")
        p = self.check()
        self.assertEqual(p.returncode, 0, p.stderr.decode())

    # --- main config errors -------------------------------------------------

    def test_wrong_type(self):
        self.tree.config["limits"] = {"message_size": "big"}
        self.tree.write()
        self.assertCheckFails(self.tree.path, "$.limits.message_size",
                              "expected")

    def test_out_of_range(self):
        self.tree.config["limits"] = {"recipients": -1}
        self.tree.write()
        self.assertCheckFails(self.tree.path, "$.limits.recipients")

    def test_unknown_key(self):
        self.tree.config["bogus_key"] = 1
        self.tree.write()
        self.assertCheckFails(self.tree.path, "$.bogus_key")

    def test_unknown_nested_key(self):
        self.tree.config["limits"] = {"message_sise": 1000000}
        self.tree.write()
        self.assertCheckFails(self.tree.path, "$.limits.message_sise")

    def test_bad_listener(self):
        self.tree.config["listen"][0]["tls"] = "sometimes"
        self.tree.write()
        self.assertCheckFails(self.tree.path, re.compile(r"\$\.listen\[0\]\.tls"))

    def test_bad_cidr(self):
        self.tree.config["relay_networks"] = ["10.0.0.0/8", "not-a-network"]
        self.tree.write()
        self.assertCheckFails(self.tree.path, "$.relay_networks[1]")

    def test_bad_line_endings(self):
        self.tree.config["line_endings"] = "lax"
        self.tree.write()
        self.assertCheckFails(self.tree.path, "$.line_endings")

    def test_invalid_json_line_column(self):
        text = '{\n  "hostname": "x",\n  "limits": {"errors": 3,,}\n}\n'
        self.tree.write(text)
        err = self.assertCheckFails(self.tree.path)
        self.assertRegex(err, r"(?i)(line\s*3\b.*col(umn)?\s*\d+)|(:3:\d+)")

    def test_duplicate_key(self):
        self.tree.write('{"hostname": "a", "hostname": "b"}')
        self.assertCheckFails(self.tree.path, "hostname")

    def test_not_an_object(self):
        self.tree.write("[1, 2, 3]\n")
        self.assertCheckFails(self.tree.path, "$")

    # --- plugins.d errors ----------------------------------------------------

    def test_bad_plugin_file(self):
        path = self.tree.plugin("10-bad", {"module": 5})
        self.tree.write()
        self.assertCheckFails(path, "$.module", "expected")

    def test_plugin_unknown_key(self):
        path = self.tree.plugin("10-bad", {"module": "discard", "extra": 1})
        self.tree.write()
        self.assertCheckFails(path, "$.extra")

    def test_plugin_invalid_json(self):
        path = self.tree.plugin("10-bad", '{\n"module": "discard"\n"x": 1}')
        self.tree.write()
        err = self.assertCheckFails(path)
        self.assertRegex(err, r"(?i)(line\s*3\b.*col(umn)?\s*\d+)|(:3:\d+)")

    def test_unknown_module(self):
        path = self.tree.plugin("10-nope", {"module": "no_such_module"})
        self.tree.write()
        self.assertCheckFails(path, "no_such_module")

    def test_hook_not_offered(self):
        path = self.tree.plugin("10-discard", {"module": "discard",
                                               "hooks": ["rcpt"]})
        self.tree.write()
        self.assertCheckFails(path, "$.hooks", "rcpt")

    def test_unknown_hook_name(self):
        path = self.tree.plugin("10-discard", {"module": "discard",
                                               "hooks": ["stroe"]})
        self.tree.write()
        self.assertCheckFails(path, "$.hooks[0]")

    def test_module_config_error(self):
        path = self.tree.plugin("20-store", {"module": "store_file",
                                             "config": {}})
        self.tree.write()
        self.assertCheckFails(path, "$.config.root")

    def test_module_config_wrong_type(self):
        path = self.tree.plugin("20-store", {
            "module": "store_file",
            "config": {"root": "/tmp/x", "fsync": "yes"}})
        self.tree.write()
        self.assertCheckFails(path, "$.config.fsync", "expected")

    def test_second_plugin_named(self):
        """The error names the bad file, not the first one."""
        self.tree.plugin("10-ok", {"module": "discard"})
        path = self.tree.plugin("20-bad", {"module": "rcpt_list",
                                           "config": {"addresses": [5]}})
        self.tree.write()
        err = self.assertCheckFails(path, "$.config.addresses[0]")
        self.assertNotIn("10-ok.json:", err)

    def test_bad_abi_module(self):
        self.require_plugin("test_bad_abi")
        path = self.tree.plugin("10-abi", {"module": "test_bad_abi"})
        self.tree.write()
        err = self.assertCheckFails(path, "test_bad_abi")
        self.assertRegex(err, r"\d+\.\d+.*\d+\.\d+", "both ABI versions")

    def test_no_descriptor_module(self):
        self.require_plugin("test_no_symbol")
        path = self.tree.plugin("10-nosym", {"module": "test_no_symbol"})
        self.tree.write()
        self.assertCheckFails(path, "test_no_symbol")

    def test_unresolved_symbol_module(self):
        # Issue 7, defect 10: bound lazily, such a module passed the check
        # and killed the daemon at its first MAIL ("symbol lookup error").
        self.require_plugin("test_unresolved")
        path = self.tree.plugin("10-unres", {"module": "test_unresolved"})
        self.tree.write()
        self.assertCheckFails(path, "postern_test_no_such_function",
                              os.path.join(TEST_PLUGIN_DIR,
                                           "test_unresolved.so"))

    def open_tree_to_others(self):
        # mkdtemp makes the tree 0700: let another user read it.
        for d, dirs, files in os.walk(self.tree.dir):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)

    def test_check_config_creates_modules_as_the_user(self):
        # Issue 7: --check-config run as root called create() as root; the
        # daemon switches to "user" before loading modules, so must the
        # check.
        # The test command runs as root (README); say so rather than skip.
        self.assertEqual(os.geteuid(), 0,
                         "this case needs root: run the test command as root")
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            self.fail("this case needs the user nobody (Debian's base-passwd)")
        self.require_plugin("test_euid")
        self.tree.plugin("10-euid", {"module": "test_euid"})
        self.tree.config["user"] = "nobody"
        self.tree.write()
        self.open_tree_to_others()
        p = run(["--check-config", "-c", self.tree.path])
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, err)
        m = re.search(r"test_euid create euid=(\d+) egid=(\d+) check_only=1",
                      err)
        self.assertIsNotNone(m, err)
        self.assertEqual((int(m.group(1)), int(m.group(2))),
                         (nobody.pw_uid, nobody.pw_gid), err)

    def test_check_config_unknown_user(self):
        self.tree.config["user"] = "no-such-user-postern-test"
        self.tree.write()
        self.assertCheckFails(self.tree.path, "$.user",
                              "no-such-user-postern-test")

    def test_test_async_config_error(self):
        self.require_plugin("test_async")
        path = self.tree.plugin("10-async", {
            "module": "test_async",
            "config": {"hooks": {"rcpt": {"result": "maybe"}}}})
        self.tree.write()
        self.assertCheckFails(path, "$.config.hooks.rcpt")


if __name__ == "__main__":
    main()
