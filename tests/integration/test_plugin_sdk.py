"""An out-of-tree module builds against the installed headers and the
pkg-config file alone, loads into the daemon, and decides at its hook.

The project is installed into a staging directory (meson install
--destdir), then a small module is compiled with nothing but
`pkg-config --cflags postern` from that staging tree.
"""

import json
import os
import shutil
import subprocess
import tempfile
import textwrap

from harness import (POSTERN_BIN, PosternTestCase, Server, main,
                     require_programs)

PLUGIN_SOURCE = textwrap.dedent(
    r"""
    #define _POSIX_C_SOURCE 200809L
    #include <stdlib.h>
    #include <string.h>
    #include <postern/postern.h>

    struct sdk_state { char *refuse; };

    static int
    sdk_create(postern_module_init *init, void **instance)
    {
        const json_t *cfg = postern_init_config(init);
        const json_t *refuse = json_object_get(cfg, "refuse");
        if (!json_is_string(refuse)) {
            postern_init_error(init, "refuse", "expected a string");
            return -1;
        }
        struct sdk_state *st = calloc(1, sizeof(*st));
        st->refuse = strdup(json_string_value(refuse));
        *instance = st;
        return 0;
    }

    static void
    sdk_destroy(void *instance)
    {
        struct sdk_state *st = instance;
        free(st->refuse);
        free(st);
    }

    static postern_result
    sdk_mail(postern_ctx *ctx, void *instance)
    {
        struct sdk_state *st = instance;
        if (strstr(postern_mail_from(ctx), st->refuse)) {
            postern_reply(ctx, 550, "5.7.1", "sdk module refuses %s",
                          postern_mail_from(ctx));
            return POSTERN_REJECT;
        }
        return POSTERN_CONTINUE;
    }

    POSTERN_MODULE_DEFINE = {
        .abi_version = POSTERN_ABI_VERSION,
        .name = "sdk_refuse",
        .create = sdk_create,
        .destroy = sdk_destroy,
        .handlers = {[POSTERN_HOOK_MAIL] = sdk_mail},
    };
    """
)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def setUpModule():
    require_programs("meson", "pkg-config", "cc")


class PluginSdkTest(PosternTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="postern-sdk-")
        build_dir = os.path.dirname(POSTERN_BIN)
        stage = os.path.join(cls.tmp, "stage")
        run(["meson", "install", "-C", build_dir, "--no-rebuild", "--quiet",
             "--destdir", stage])
        pcs = [os.path.join(d, f) for d, _, fs in os.walk(stage) for f in fs
               if f == "postern.pc"]
        if not pcs:
            raise AssertionError("meson install did not install postern.pc")
        prefix = run(["pkg-config", "--variable=prefix", pcs[0]]).stdout.strip()
        cls.staged_bin = os.path.join(stage + prefix, "bin", "postern")
        cls.installed_module_dir = run(
            ["pkg-config", "--variable=moduledir", pcs[0]]).stdout.strip()
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]))
        cflags = run(["pkg-config", "--cflags",
                      "--define-variable=prefix=" + stage + prefix, "postern"],
                     env=env).stdout.split()
        cls.cflags = cflags
        cls.plugin_dir = os.path.join(cls.tmp, "plugins")
        os.makedirs(cls.plugin_dir)
        src = os.path.join(cls.tmp, "sdk_refuse.c")
        with open(src, "w") as f:
            f.write(PLUGIN_SOURCE)
        # Only the staged headers: nothing from the source tree.
        run(["cc", "-std=c11", "-pedantic", "-Wall", "-Wextra", "-Werror", "-shared",
             "-fPIC", "-fvisibility=hidden", *cflags, "-o",
             os.path.join(cls.plugin_dir, "sdk_refuse.so"), src])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_cflags_point_into_the_staged_install(self):
        includes = [f for f in self.cflags if f.startswith("-I")]
        self.assertTrue(includes, self.cflags)
        self.assertTrue(any(f[2:].startswith(self.tmp) for f in includes),
                        self.cflags)

    def test_module_loads_and_decides(self):
        plugins = {"10-sdk.json": {"module": "sdk_refuse",
                                   "config": {"refuse": "@spam.test"}}}
        cfg = {"module_path": [self.plugin_dir]}
        with Server(plugins=plugins, config=cfg) as srv, srv.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<bot@spam.test>")
            self.assertEqual((r.code, r.enhanced), (550, "5.7.1"), r)
            self.assertIn("sdk module refuses bot@spam.test", r.text)
            c.cmd_expect("MAIL FROM:<friend@example.org>", 250)

    def test_module_config_error_names_the_path(self):
        plugins = {"10-sdk.json": {"module": "sdk_refuse",
                                   "config": {"refuse": 42}}}
        cfg = {"module_path": [self.plugin_dir]}
        srv = Server(plugins=plugins, config=cfg, start=False)
        try:
            r = subprocess.run([POSTERN_BIN, "--check-config", "-c",
                                srv.config_path], capture_output=True,
                               text=True, timeout=30)
        finally:
            srv.cleanup()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("10-sdk.json: $.config.refuse: expected a string",
                      r.stderr)

    def check_default_module_path(self, binary):
        """--check-config of `binary` on a config without module_path and
        one plugins.d file enabling the bundled discard module."""
        srv = Server(plugins={"10-discard.json": {"module": "discard"}},
                     start=False)
        try:
            with open(srv.config_path) as f:
                cfg = json.load(f)
            cfg.pop("module_path", None)
            with open(srv.config_path, "w") as f:
                json.dump(cfg, f)
            return subprocess.run([binary, "--check-config", "-c",
                                   srv.config_path], capture_output=True,
                                  text=True, timeout=30)
        finally:
            srv.cleanup()

    def test_installed_binary_ignores_the_build_tree(self):
        # Issue 7, defect 11: the default module_path of an installed
        # postern listed the build tree first, so it loaded whatever .so
        # was there.
        self.assertFalse(
            os.path.exists(os.path.join(self.installed_module_dir,
                                        "discard.so")),
            "postern modules are installed in %s on this machine: this case "
            "needs that directory empty" % self.installed_module_dir)
        build_modules = os.path.join(os.path.dirname(POSTERN_BIN), "modules")
        self.assertTrue(os.path.exists(os.path.join(build_modules,
                                                    "discard.so")))
        r = self.check_default_module_path(self.staged_bin)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn("discard.so not found in %s " % self.installed_module_dir,
                      r.stderr)
        self.assertNotIn(build_modules, r.stderr)

    def test_build_tree_binary_finds_the_bundled_modules(self):
        r = self.check_default_module_path(POSTERN_BIN)
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    main()
