#!/usr/bin/env python3
"""Make a man page (roff, man macros) out of sections of the Markdown docs.

The Markdown files stay the one source: docs/configuration.md becomes
postern.json(5), the modules' READMEs postern-modules(7), docs/postern.md
and docs/operations.md postern(8). meson runs this at build time
(docs/man/meson.build); nothing here knows about one page in particular.

    mkman.py -o OUT --name postern.json --section 5 --summary "..."
             --version V SOURCE...

A SOURCE is PATH, PATH::HEADING or PATH::HEADING::MODE. HEADING picks the
section with that title (it and what is under it, up to the next heading
of its level or above). MODE says where its top heading lands:
  sh    (default) the top heading is a .SH, the next level .SS
  sub   the top heading is a .SS, deeper ones bold paragraphs
  drop  the top heading goes; its text joins the section before (the
        first source's text is the DESCRIPTION), the next level is .SH

The Markdown handled is the docs' own: ATX headings, paragraphs, "-" and
"1." lists, fenced and indented code, pipe tables, `code`, **bold**,
*emphasis*, [links](...). A table becomes one tagged paragraph per row:
the first cell is the tag, the middle cells "header: value", the last the
text. Standard library only.
"""

import argparse
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
NUMBERED = re.compile(r"^(\s*)(\d+)[.)]\s+(.*)$")
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def escape(text):
    """Roff-escape plain text: backslashes, and every non-ASCII character
    as \\[uXXXX], so the page needs no input encoding (preconv)."""
    out = []
    for ch in text.replace("\\", "\\e"):
        if ord(ch) > 127:
            out.append("\\[u%04X]" % ord(ch))
        elif ch == "-":
            out.append("\\-")
        else:
            out.append(ch)
    return "".join(out)


def inline(text):
    """Markdown inline markup to roff font escapes. Code spans are set
    aside first: nothing inside them is markup, but they may sit inside
    **bold** or a link label."""
    spans = []

    def keep(m):
        spans.append("\\fB" + escape(m.group(2).strip()) + "\\fR")
        return "\x00%d\x00" % (len(spans) - 1)

    text = re.sub(r"(`+)(.*?)\1", keep, text)
    text = inline_plain(text)
    # code inside bold is bold already; \fR would end the bold early
    text = re.sub(r"\\fB\x00(\d+)\x00\\fR",
                  lambda m: spans[int(m.group(1))], text)
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], text)


def inline_plain(text):
    text = text.replace("\\|", "|")
    # [label](target): the label only; a web address is kept after it.
    def link(m):
        label, target = m.group(1), m.group(2)
        if re.match(r"https?://", target):
            return "%s <%s>" % (label, target)
        return label

    text = re.sub(r"\[([^\]]*)\]\(([^)\s]*)\)", link, text)
    text = re.sub(r"\\([\\`*_{}\[\]()#+\-.!<>])", r"\1", text)
    text = escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"\\fB\1\\fR", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\\fI\1\\fR",
                  text)
    return text


def text_line(roff):
    """One roff text line: a leading . or ' would be a request."""
    roff = roff.strip()
    if roff.startswith((".", "'")):
        roff = "\\&" + roff
    return roff


def heading_text(title):
    title = re.sub(r"`([^`]*)`", r"\1", title)
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)
    return title


def split_row(line):
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    cells, cur, i = [], "", 0
    in_code = False
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] == "|":
            cur += "\\|"
            i += 2
            continue
        if c == "`":
            in_code = not in_code
        if c == "|" and not in_code:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    cells.append(cur.strip())
    return cells


class Page:
    def __init__(self):
        self.out = []
        self.in_section = False

    def emit(self, *lines):
        self.out.extend(lines)

    def content(self, *lines):
        # Text before any heading of the page is its DESCRIPTION.
        if not self.in_section:
            self.heading("SH", "Description")
        self.emit(*lines)

    def heading(self, kind, title):
        title = heading_text(title)
        if kind == "SH":
            self.in_section = True
            self.emit(".SH", text_line(escape(title.upper())))
        elif kind == "SS":
            self.content(".SS", text_line(escape(title)))
        else:
            self.content(".PP", text_line("\\fB" + inline(title) + "\\fR"))

    def paragraph(self, lines):
        self.content(".PP", text_line(inline(" ".join(l.strip() for l in lines))))

    def code(self, lines):
        self.content(".PP", ".RS 4", ".EX")
        for line in lines:
            line = escape(line.rstrip())
            self.emit("\\&" + line if line.startswith((".", "'")) else line)
        self.emit(".EE", ".RE")

    def list_item(self, marker, lines, width):
        self.content(".IP %s %d" % (marker, width),
                  text_line(inline(" ".join(l.strip() for l in lines))))

    def table(self, header, rows):
        for row in rows:
            row = row + [""] * (len(header) - len(row))
            tag = inline(row[0])
            if "\\f" not in tag:
                tag = "\\fB" + tag + "\\fR"  # a tag is bold, code or not
            self.content(".TP", text_line(tag))
            if len(header) > 2:
                middle = ["\\fI%s\\fR: %s" % (escape(h), inline(c))
                          for h, c in zip(header[1:-1], row[1:-1]) if c]
                self.emit(text_line("; ".join(middle)))
                self.emit(".br")
            self.emit(text_line(inline(row[-1])))


def select(lines, title):
    """The lines of the section titled `title` (its heading first)."""
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m and heading_text(m.group(2)) == heading_text(title):
            level = len(m.group(1))
            end = len(lines)
            fenced = False
            for j in range(i + 1, len(lines)):
                if FENCE.match(lines[j]):
                    fenced = not fenced
                m2 = None if fenced else HEADING.match(lines[j])
                if m2 and len(m2.group(1)) <= level:
                    end = j
                    break
            return lines[i:end]
    raise SystemExit("mkman: no section titled %r" % title)


def convert(page, lines, mode):
    """Append the Markdown `lines` to page; mode as in the module doc."""
    top = None
    i = 0
    para = []

    def flush():
        if para:
            page.paragraph(para)
            del para[:]

    while i < len(lines):
        line = lines[i]
        m = HEADING.match(line)
        if m:
            flush()
            level = len(m.group(1))
            if top is None:
                top = level
            depth = level - top  # 0 for the top heading
            if mode == "drop":
                depth -= 1
            elif mode == "sub":
                depth += 1
            if depth >= 0:
                page.heading(["SH", "SS"][depth] if depth < 2 else "P",
                             m.group(2))
            i += 1
            continue
        if FENCE.match(line):
            flush()
            fence = FENCE.match(line).group(1)
            code = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                code.append(lines[i])
                i += 1
            page.code(code)
            i += 1
            continue
        if not line.strip():
            flush()
            i += 1
            continue
        if line.lstrip().startswith("<!--"):
            # a note to the docs' readers or editors, not to the page
            flush()
            while i < len(lines) and "-->" not in lines[i]:
                i += 1
            i += 1
            continue
        if (line.lstrip().startswith("|") and i + 1 < len(lines)
                and TABLE_RULE.match(lines[i + 1])):
            flush()
            header = split_row(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(split_row(lines[i]))
                i += 1
            page.table(header, rows)
            continue
        bm, nm = BULLET.match(line), NUMBERED.match(line)
        if (bm or nm) and not para:
            marker = "\\(bu" if bm else nm.group(2) + "."
            width = 2 if bm else 4
            item = [bm.group(2) if bm else nm.group(3)]
            i += 1
            # continuation lines: indented, not a new item or block
            while (i < len(lines) and lines[i].strip()
                   and lines[i].startswith(" ")
                   and not BULLET.match(lines[i])
                   and not NUMBERED.match(lines[i])):
                item.append(lines[i])
                i += 1
            page.list_item(marker, item, width)
            continue
        if line.startswith("    ") and not para:
            code = []
            while i < len(lines) and (lines[i].startswith("    ")
                                      or not lines[i].strip()):
                code.append(lines[i][4:])
                i += 1
            while code and not code[-1].strip():
                code.pop()
            page.code(code)
            continue
        para.append(line)
        i += 1
    flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--section", required=True)
    ap.add_argument("--summary", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("sources", nargs="+")
    args = ap.parse_args()

    manual = {"5": "File Formats", "7": "Miscellanea",
              "8": "System Administration"}.get(args.section, "")
    page = Page()
    page.emit(".\\\" Generated by docs/man/mkman.py from: %s"
              % ", ".join(sorted({os.path.relpath(s.split("::")[0], ROOT)
                                  for s in args.sources})),
              ".\\\" Do not edit: edit those files.",
              '.TH "%s" "%s" "" "postern %s" "%s"'
              % (args.name.upper(), args.section, args.version, manual),
              ".SH NAME",
              text_line("%s \\- %s" % (escape(args.name),
                                        escape(args.summary))))
    for spec in args.sources:
        parts = spec.split("::")
        path = parts[0]
        mode = parts[2] if len(parts) > 2 else "sh"
        if mode not in ("sh", "sub", "drop"):
            raise SystemExit("mkman: unknown mode %r in %r" % (mode, spec))
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        if len(parts) > 1 and parts[1]:
            lines = select(lines, parts[1])
        convert(page, lines, mode)
    with open(args.output, "w", encoding="ascii") as f:
        f.write("\n".join(page.out) + "\n")


if __name__ == "__main__":
    main()
