"""One self-contained HTML page from sections of tables, figures and notes.

Pure rendering, no knowledge of what the tables mean. The page must open anywhere, offline
and years later: figures are embedded as ``data:`` URIs, the CSS and the one script are
inline, and nothing points outside the file. Every text is HTML-escaped; in cells,
paragraphs, intros and notes Markdown's bold (two stars) and code (backticks) are then
kept, as the Markdown files the tools write use both; nothing else of Markdown.
"""

from __future__ import annotations

import base64
import html
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
        ".svg": "image/svg+xml"}
NUM = ' class="num"'
BULLET = "• "  # how markdown_blocks marks a list item
WIDE_ASPECT = 1.8  # width / height above which a figure spans the whole figure grid
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")
# a cell that reads as a number: a sign, a digit, a dash for "missing", or a p-value
_NUMERIC = re.compile(r"^(?:[+\-−–]?\s*[\d.]|[<>≤≥]\s*\d|p\s*[<=]|[–—-]$|n/a$)")
_SEPARATOR_CELL = re.compile(r"^:?-+:?$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+")
_BLOCK_START = re.compile(r"^\s*(?:#{1,6}\s|[-*+]\s|\d+[.)]\s|>|```)")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
  sans-serif; line-height: 1.45; color: #1a1a1a; background: #fff; margin: 0 auto;
  max-width: 1200px; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; }
h2 { font-size: 1.35rem; border-bottom: 2px solid #ccc; padding-bottom: .2rem;
  margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .3rem; }
.subtitle { color: #555; margin-top: 0; }
nav.toc { background: #f6f6f6; border: 1px solid #ddd; padding: .5rem 1rem; }
nav.toc ol { margin: .3rem 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: .4rem 0 .3rem; font-size: .88rem; }
th, td { border: 1px solid #bbb; padding: .2rem .45rem; vertical-align: top; }
th { background: #eee; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafafa; }
.how { color: #444; font-size: .85rem; margin: .1rem 0 .9rem; font-style: italic; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .35rem .7rem;
  margin: .5rem 0; }
.missing { background: #fdecea; border-left: 4px solid #c62828; padding: .35rem .7rem; }
.label { background: #c62828; color: #fff; font-weight: bold; padding: .5rem .8rem;
  margin: .3rem 0; }
figure { margin: 1rem 0 1.6rem; }
figure { overflow-x: auto; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; cursor: zoom-in; }
figure.zoom img { max-width: none; cursor: zoom-out; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr));
  gap: 0 1.2rem; align-items: start; }
.figures figure.wide { grid-column: 1 / -1; }
figcaption { font-weight: 600; margin-bottom: .3rem; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: .6rem; overflow-x: auto;
  font-size: .8rem; }
#broken-banner { position: sticky; top: 0; background: #c62828; color: #fff;
  font-weight: bold; padding: .5rem 1rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav.toc, #broken-banner { display: none; }
  h2 { break-before: page; }
  table, figure { break-inside: avoid; }
  .figures { display: block; }
  .table-wrap { overflow: visible; }
}
"""

# Counts the figures that decoded, so a reader (and the browser test) sees at once when one
# did not; no network, nothing loaded.
SCRIPT = """
document.addEventListener("click", function (e) {
  // a wide figure drawn small: a click shows it at full size (scroll sideways)
  if (e.target.tagName === "IMG" && e.target.parentNode.tagName === "FIGURE") {
    e.target.parentNode.classList.toggle("zoom");
  }
});
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var broken = imgs.length - ok;
  document.body.dataset.imagesLoaded = String(ok);
  document.body.dataset.imagesBroken = String(broken);
  if (broken > 0) {
    var b = document.getElementById("broken-banner");
    b.textContent = broken + " of " + imgs.length + " figures failed to load";
    b.hidden = false;
  }
});
"""


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    how_to_read: str = ""


@dataclass
class Figure:
    title: str
    path: Path
    how_to_read: str = ""
    label: str | None = None  # a warning shown over the figure


@dataclass
class Code:
    """Preformatted text (a config file), shown as it is."""

    text: str
    title: str = ""


Block = Table | Figure | Code | str  # a str is a Markdown paragraph (escaped, bold kept)


@dataclass
class Section:
    """Rendered in this order: intro, tables, blocks, figures, notes."""

    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)


# ----------------------------------------------------------------------------- rendering
def inline(text: str) -> str:
    """Escaped text with Markdown's bold and code spans turned into tags."""
    out = html.escape(text)
    out = _CODE.sub(r"<code>\1</code>", out)
    return _BOLD.sub(r"<strong>\1</strong>", out)


def _numeric_columns(table: Table) -> list[bool]:
    """A column is right-aligned when every filled cell of it reads as a number."""
    out = []
    for j in range(len(table.columns)):
        cells = [r[j].strip() for r in table.rows if j < len(r) and r[j].strip()]
        plain = [_BOLD.sub(r"\1", c) for c in cells]
        out.append(bool(plain) and all(_NUMERIC.match(c) for c in plain))
    return out


def render_table(table: Table, heading: str = "h3") -> str:
    numeric = _numeric_columns(table)
    parts = []
    if table.title:
        parts.append(f"<{heading}>{html.escape(table.title)}</{heading}>")
    head = "".join(f'<th{NUM if n else ""}>{inline(c)}</th>'
                   for c, n in zip(table.columns, numeric, strict=True))
    body = []
    for row in table.rows:
        cells = list(row) + [""] * (len(table.columns) - len(row))
        body.append("<tr>" + "".join(
            f'<td{NUM if n else ""}>{inline(c)}</td>'
            for c, n in zip(cells, numeric, strict=False)) + "</tr>")
    parts.append(f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
                 f'<tbody>{"".join(body)}</tbody></table></div>')
    if table.how_to_read:
        parts.append(f'<p class="how">{inline(table.how_to_read)}</p>')
    return "\n".join(parts)


def data_uri(path: Path) -> str | None:
    """The file as a ``data:`` URI; None when it is missing or not PNG, JPEG or SVG."""
    mime = MIME.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return None
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk; None for anything else."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _is_wide(path: Path) -> bool:
    """A figure much wider than tall gets a row of its own in the figure grid."""
    try:
        with open(path, "rb") as fh:
            size = _png_size(fh.read(24))
    except OSError:
        return False
    return size is not None and size[1] > 0 and size[0] / size[1] > WIDE_ASPECT


def render_figure(fig: Figure) -> str:
    wide = ' class="wide"' if fig.label or _is_wide(Path(fig.path)) else ""
    parts = [f"<figure{wide}>", f"<figcaption>{html.escape(fig.title)}</figcaption>"]
    if fig.label:
        parts.append(f'<div class="label">{html.escape(fig.label)}</div>')
    uri = data_uri(Path(fig.path))
    if uri is None:
        why = "figure missing" if not Path(fig.path).is_file() else \
            "figure not embeddable (PNG, JPEG or SVG only)"
        log.warning("%s: %s", why, fig.path)
        parts.append(f'<p class="missing">{why}: {html.escape(str(fig.path))}</p>')
    else:
        parts.append(f'<img src="{uri}" alt="{html.escape(fig.title)}">')
    if fig.how_to_read:
        parts.append(f'<p class="how">{inline(fig.how_to_read)}</p>')
    parts.append("</figure>")
    return "\n".join(parts)


def render_paragraph(text: str) -> str:
    lines = text.splitlines()
    if lines and all(line.startswith(BULLET) for line in lines):
        return "<ul>" + "".join(f"<li>{inline(line[len(BULLET):])}</li>" for line in lines) \
            + "</ul>"
    return "<p>" + "<br>\n".join(inline(line) for line in lines) + "</p>"


def render_block(block: Block) -> str:
    if isinstance(block, Table):
        return render_table(block, heading="h4")
    if isinstance(block, Figure):
        return render_figure(block)
    if isinstance(block, Code):
        title = f"<h3>{html.escape(block.title)}</h3>\n" if block.title else ""
        return f"{title}<pre>{html.escape(block.text)}</pre>"
    return render_paragraph(block)


def _anchor(i: int) -> str:
    return f"sec-{i + 1}"


def render_section(section: Section, anchor: str) -> str:
    parts = [f'<section id="{anchor}">', f"<h2>{html.escape(section.title)}</h2>"]
    if section.intro:
        parts.append(render_paragraph(section.intro))
    parts += [render_table(t) for t in section.tables]
    parts += [render_block(b) for b in section.blocks]
    if section.figures:
        parts += ['<div class="figures">', *(render_figure(f) for f in section.figures),
                  "</div>"]
    parts += [f'<p class="note">{inline(n)}</p>' for n in section.notes]
    parts.append("</section>")
    return "\n".join(parts)


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole HTML5 document."""
    toc = "".join(f'<li><a href="#{_anchor(i)}">{html.escape(s.title)}</a></li>'
                  for i, s in enumerate(sections))
    body = "\n".join(render_section(s, _anchor(i)) for i, s in enumerate(sections))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<div id="broken-banner" hidden></div>
<header>
<h1>{html.escape(title)}</h1>
<p class="subtitle">{html.escape(subtitle)}</p>
</header>
<nav class="toc"><strong>Contents</strong><ol>{toc}</ol></nav>
{body}
<script>{SCRIPT}</script>
</body>
</html>
"""


# ----------------------------------------------------------------------------- Markdown
def _split_row(line: str) -> list[str]:
    """The cells of a pipe-table row; ``\\|`` is a literal bar inside a cell."""
    text = line.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|") and not text.endswith("\\|"):
        text = text[:-1]
    cells, cur, i = [], [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] == "|":
            cur.append("|")
            i += 2
            continue
        if text[i] == "|":
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(text[i])
        i += 1
    cells.append("".join(cur).strip())
    return cells


def _has_bar(line: str) -> bool:
    return "|" in line.replace("\\|", "")


def _table_at(lines: list[str], i: int) -> tuple[Table, int] | None:
    """The table whose header is ``lines[i]``, and the index after it; None if none."""
    if i + 1 >= len(lines) or not _has_bar(lines[i]) or not _has_bar(lines[i + 1]):
        return None
    header, sep = _split_row(lines[i]), _split_row(lines[i + 1])
    if len(header) != len(sep) or not all(_SEPARATOR_CELL.match(c) for c in sep):
        return None
    rows, j = [], i + 2
    # as GitHub does: a table ends at a blank line or where another block starts
    while j < len(lines) and lines[j].strip() and (_has_bar(lines[j])
                                                   or not _BLOCK_START.match(lines[j])):
        cells = _split_row(lines[j])
        # as GitHub does: short rows padded, long rows cut to the header
        rows.append((cells + [""] * len(header))[: len(header)])
        j += 1
    return Table(title="", columns=header, rows=rows), j


def markdown_blocks(md: str) -> list[Table | str]:
    """The Markdown's paragraphs (str: headings as ``**bold**`` lines, bullets as ``•``
    lines) and pipe tables (untitled), in order."""
    lines = md.splitlines()
    blocks: list[Table | str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append("\n".join(para))
            para.clear()

    i, fenced = 0, False
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            fenced = not fenced
            i += 1
            continue
        found = None if fenced else _table_at(lines, i)
        if found is not None:
            flush()
            blocks.append(found[0])
            i = found[1]
            continue
        if not fenced and not line.strip():
            flush()
        elif not fenced and (m := _HEADING.match(line)):
            flush()
            blocks.append(f"**{m.group(2)}**")
        elif not fenced and _BULLET.match(line):
            para.append(BULLET + _BULLET.sub("", line, count=1))
        else:
            para.append(line.rstrip() if fenced else line.strip())
        i += 1
    flush()
    return blocks


def markdown_table(md: str, title: str, how_to_read: str = "") -> list[Table]:
    """Every pipe table of the Markdown, titled ``title`` (``title (2)``... when several),
    each with ``how_to_read``."""
    tables = [b for b in markdown_blocks(md) if isinstance(b, Table)]
    for k, t in enumerate(tables):
        t.title = title if len(tables) == 1 or k == 0 else f"{title} ({k + 1})"
        t.how_to_read = how_to_read
    return tables
