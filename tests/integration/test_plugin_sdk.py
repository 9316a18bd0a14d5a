"""An out-of-tree module builds against the installed headers and the
pkg-config file alone, loads into the daemon, and decides at its hook.

The project is installed into a staging directory (meson install
--destdir), then a small module is compiled with nothing but
`pkg-config --cflags postern` from that staging tree.
"""

import json
import os
import re
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

# Issue 10: a C++ module. The descriptor must be exported with its C name
# (a namespace-scope const has internal linkage in C++), and C++ has no
# designated array initialisers: postern_module_make() fills the handlers.
CXX_PLUGIN_SOURCE = textwrap.dedent(
    r"""
    #include <string>
    #include <postern/postern.h>

    namespace {

    struct cxx_state {
        std::string refuse;
    };

    int
    cxx_create(postern_module_init *init, void **instance)
    {
        const json_t *refuse =
            json_object_get(postern_init_config(init), "refuse");
        if (!json_is_string(refuse)) {
            postern_init_error(init, "refuse", "expected a string");
            return -1;
        }
        *instance = new cxx_state{json_string_value(refuse)};
        return 0;
    }

    void
    cxx_destroy(void *instance)
    {
        delete static_cast<cxx_state *>(instance);
    }

    postern_result
    cxx_rcpt(postern_ctx *ctx, void *instance)
    {
        const cxx_state *st = static_cast<const cxx_state *>(instance);
        std::string rcpt = postern_rcpt_current(ctx);
        if (rcpt.find(st->refuse) == std::string::npos)
            return POSTERN_CONTINUE;
        postern_reply(ctx, 550, "5.7.1", "c++ module refuses %s",
                      rcpt.c_str());
        return POSTERN_REJECT;
    }

    } // namespace

    POSTERN_MODULE_DEFINE = postern_module_make(
        "sdk_cxx", "a C++ module", cxx_create, cxx_destroy,
        {{POSTERN_HOOK_RCPT, cxx_rcpt}});
    """
)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def setUpModule():
    require_programs("meson", "pkg-config", "cc", "c++", "nm")


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
        cls.pc = pcs[0]
        cls.stage = stage
        prefix = run(["pkg-config", "--variable=prefix", pcs[0]]).stdout.strip()
        cls.prefix = prefix
        cls.staged_bin = os.path.join(stage + prefix, "sbin", "postern")
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
        cxx_src = os.path.join(cls.tmp, "sdk_cxx.cc")
        with open(cxx_src, "w") as f:
            f.write(CXX_PLUGIN_SOURCE)
        cls.cxx_so = os.path.join(cls.plugin_dir, "sdk_cxx.so")
        run(["c++", "-std=c++17", "-pedantic", "-Wall", "-Wextra", "-Werror",
             "-shared", "-fPIC", "-fvisibility=hidden", *cflags, "-o",
             cls.cxx_so, cxx_src])
        # the staged header's ABI, for the pkg-config variables
        headers = [os.path.join(d, f) for d, _, fs in os.walk(stage)
                   for f in fs if f == "module.h"
                   and d.endswith(os.path.join("include", "postern"))]
        with open(headers[0]) as f:
            text = f.read()
        cls.header_abi = tuple(
            re.search(r"^#define POSTERN_ABI_%s (\d+)$" % what, text,
                      re.M).group(1) for what in ("MAJOR", "MINOR"))

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

    def test_cxx_module_exports_its_descriptor_and_decides(self):
        # Issue 10: the descriptor of a C++ module had internal linkage (no
        # symbol to find) and a mangled name.
        syms = run(["nm", "-D", "--defined-only", self.cxx_so]).stdout
        self.assertRegex(syms, r"(?m) [DR] postern_module_descriptor$")
        plugins = {"10-cxx.json": {"module": "sdk_cxx",
                                   "config": {"refuse": "@blocked.test"}}}
        cfg = {"module_path": [self.plugin_dir]}
        with Server(plugins=plugins, config=cfg) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<a@example.org>", 250)
            r = c.cmd("RCPT TO:<x@blocked.test>")
            self.assertEqual((r.code, r.enhanced), (550, "5.7.1"), r)
            self.assertIn("c++ module refuses x@blocked.test", r.text)
            c.cmd_expect("RCPT TO:<x@example.com>", 250)

    def test_cxx_module_config_error(self):
        plugins = {"10-cxx.json": {"module": "sdk_cxx",
                                   "config": {"refuse": []}}}
        srv = Server(plugins=plugins, config={"module_path": [self.plugin_dir]},
                     start=False)
        try:
            r = subprocess.run([POSTERN_BIN, "--check-config", "-c",
                                srv.config_path], capture_output=True,
                               text=True, timeout=30)
        finally:
            srv.cleanup()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("10-cxx.json: $.config.refuse: expected a string",
                      r.stderr)

    def test_pc_moduledir_is_prefix_relative_and_carries_the_abi(self):
        # Issue 10: moduledir was an absolute path, and the .pc had no ABI.
        var = lambda *a: run(["pkg-config", *a, self.pc]).stdout.strip()
        moved = var("--define-variable=prefix=/somewhere/else",
                    "--variable=moduledir")
        self.assertTrue(moved.startswith("/somewhere/else/"), moved)
        self.assertTrue(moved.endswith("/postern/modules"), moved)
        self.assertEqual(var("--variable=moduledir"),
                         self.prefix + moved[len("/somewhere/else"):])
        abi = (var("--variable=abi_major"), var("--variable=abi_minor"))
        self.assertEqual(abi, self.header_abi)
        version = run([POSTERN_BIN, "--version"]).stdout
        self.assertIn("module ABI %s.%s" % abi, version)

    def test_module_path_extends_the_bundled_directory(self):
        # Issue 10: a module_path naming only the plugin's directory
        # dropped the bundled modules. sdk_refuse comes from module_path,
        # discard (which stores nothing but makes DATA end in 250) from
        # the default directory.
        plugins = {"10-sdk.json": {"module": "sdk_refuse",
                                   "config": {"refuse": "@spam.test"}},
                   "20-discard.json": {"module": "discard"}}
        cfg = {"module_path": [self.plugin_dir]}
        with Server(plugins=plugins, config=cfg) as srv, srv.client() as c:
            c.ehlo()
            c.cmd_expect("MAIL FROM:<bot@spam.test>", 550)
            c.cmd_expect("MAIL FROM:<friend@example.org>", 250)
            c.cmd_expect("RCPT TO:<x@example.com>", 250)
            c.cmd_expect("DATA", 354)
            c.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
            self.assertEqual(c.reply().code, 250)

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
