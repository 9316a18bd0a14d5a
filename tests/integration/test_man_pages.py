"""The man pages: they render without a warning, and they are complete.

postern(8), postern.json(5) and postern-modules(7) are made at build time
from the Markdown docs (docs/man/mkman.py), so the docs and the pages say
the same. What this checks is that the docs say enough: every key the
configuration parser accepts (read from core/config.c's key tables, so a
new key without a docs/configuration.md row fails here), every option of
core/main.c, every bundled module (modules/meson.build).
"""

import os
import re
import subprocess

from harness import POSTERN_BIN, PosternTestCase, main, require_programs

BUILD_DIR = os.path.dirname(POSTERN_BIN)
SOURCE_DIR = os.environ.get(
    "POSTERN_SOURCE_DIR",
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))))
MAN_DIR = os.path.join(BUILD_DIR, "docs", "man")
PAGES = ("postern.8", "postern.json.5", "postern-modules.7")


def setUpModule():
    require_programs("groff", "man")


def source(*path):
    with open(os.path.join(SOURCE_DIR, *path)) as f:
        return f.read()


def page(name):
    with open(os.path.join(MAN_DIR, name)) as f:
        return f.read()


def sections(roff):
    """{(SH title, SS title or None): [tags of its .TP paragraphs]}, and
    {same key: its roff text}."""
    tags, text = {}, {}
    sh = ss = None
    lines = roff.splitlines()
    for i, line in enumerate(lines):
        if line == ".SH":
            sh, ss = lines[i + 1], None
        elif line == ".SS":
            ss = lines[i + 1]
        elif line == ".TP" and i + 1 < len(lines):
            tags.setdefault((sh, ss), []).extend(
                t.replace("\\-", "-")
                for t in re.findall(r"\\fB(.*?)\\fR", lines[i + 1]))
        text.setdefault((sh, ss), []).append(line)
    return tags, {k: "\n".join(v) for k, v in text.items()}


def config_tables():
    """core/config.c's key tables: {table: [(key, sub table or None)]}."""
    c = source("core", "config.c")
    tables = {}
    for m in re.finditer(r"static const struct field (\w+)\[\] = \{(.*?)\n\};",
                         c, re.S):
        entries = re.findall(r'\{"(\w+)",([^{}]*)\}', m.group(2))
        tables[m.group(1)] = [
            (key, (re.search(r"\.sub = (\w+)", rest) or [None, None])[1])
            for key, rest in entries]
    return tables


class ManPagesTest(PosternTestCase):
    def test_pages_render_without_warnings(self):
        for name in PAGES:
            path = os.path.join(MAN_DIR, name)
            r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", path],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual((r.returncode, r.stderr), (0, ""), name)
            r = subprocess.run(["man", "-l", path], capture_output=True,
                               text=True, timeout=60,
                               env=dict(os.environ, MANWIDTH="80",
                                        MAN_KEEP_STDERR="1"))
            self.assertEqual((r.returncode, r.stderr), (0, ""), name)
            self.assertIn("NAME", r.stdout)

    def test_every_config_key_is_in_postern_json_5(self):
        tables = config_tables()
        self.assertIn("main_fields", tables)
        tags, text = sections(page("postern.json.5"))
        top = ("THE MAIN FILE", "Top level")
        # a main key's own table is documented under "### <key>"
        where = {"main_fields": top}
        for key, sub in tables["main_fields"]:
            if sub:
                where[sub] = ("THE MAIN FILE", key)
        missing = []
        for table, entries in tables.items():
            if table not in where:
                continue
            for key, sub in entries:
                if key not in tags.get(where[table], []):
                    missing.append("%s (%s, section %s)" % (key, table,
                                                            where[table][1]))
                # a table deeper down (cert_fields) is described in the
                # row of the key that holds it
                if sub and sub not in where:
                    body = text.get(where[table], "")
                    for inner, _ in tables[sub]:
                        if '"%s"' % inner not in body:
                            missing.append("%s (%s, in %s)" % (inner, sub,
                                                               key))
        self.assertEqual(missing, [], "keys core/config.c accepts that "
                         "docs/configuration.md does not document")

    def test_every_plugins_d_key_is_in_postern_json_5(self):
        m = re.search(r"plugin_config_parse\(.*?keys\[\] = \{(.*?)\}",
                      source("core", "config.c"), re.S)
        keys = re.findall(r'"(\w+)"', m.group(1))
        self.assertIn("module", keys)
        tags, _ = sections(page("postern.json.5"))
        self.assertEqual([k for k in keys
                          if k not in tags.get(("PLUGINS.D", None), [])], [])

    def test_every_option_is_in_postern_8(self):
        # {"config", required_argument, NULL, 'c'}; an option without a
        # short form has a number or a constant there
        options = re.findall(r'\{"([a-z-]+)",\s*\w+_argument,\s*NULL,\s*'
                             r'(?:\'(\w)\'|\w+)\s*\}',
                             source("core", "main.c"))
        self.assertIn(("config", "c"), options)
        tags, _ = sections(page("postern.8"))
        documented = [t.split()[0] for t in tags.get(("OPTIONS", None), [])]
        for long, short in options:
            self.assertIn("--" + long, documented,
                          "add it to the Options table of docs/postern.md")
            if short:
                self.assertIn("-" + short, documented)

    def test_every_bundled_module_has_a_section(self):
        text = source("modules", "meson.build")
        names = []
        for m in re.finditer(r"bundled_modules\s*\+?=\s*\[([^\]]*)\]", text):
            names += re.findall(r"'([a-z0-9_]+)'", m.group(1))
        self.assertIn("store_file", names)
        roff = page("postern-modules.7")
        titles = re.findall(r"^\.SH\n(.*)$", roff, re.M)
        heads = {re.split(r"[^A-Z0-9_\\]", t.replace("\\-", "-"))[0]
                 for t in titles}
        tags, _ = sections(roff)
        listed = tags.get(("DESCRIPTION", None), [])
        for name in names:
            self.assertIn(name.upper(), heads, "no section for " + name)
            self.assertIn(name, listed, name + " not in the list at the top")


if __name__ == "__main__":
    main()
