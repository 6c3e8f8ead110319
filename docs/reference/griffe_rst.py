"""A griffe extension: the reST bits of our docstrings, read as Markdown.

The docstrings are written for ``help()`` and an editor's hover, in the reST habits of the
standard library: ``:class:`Name``` roles, paragraphs that end in ``::`` before an
indented block, and simple tables drawn with ``=====``. mkdocstrings renders Markdown,
where the role would show as literal ``:class:`` text, the ``::`` as two colons and the
table as a paragraph. This extension rewrites the three, for the site only; the source
stays as it is.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

# :class:`Name`, :func:`~ccr.ops.verify.run_checks`, :mod:`ccr.ops.verify`, ...
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`~?([^`]+)`")
# "Shape of one routed request::" -> "Shape of one routed request:"; a bare "::" line goes.
_LITERAL_INTRO = re.compile(r"(?m)(\S)::$")
_BARE_LITERAL = re.compile(r"(?m)^[ \t]*::[ \t]*\n")


# A simple table's border: two or more runs of "=" separated by spaces.
_BORDER = re.compile(r"^(?P<indent> *)=+(?: +=+)+ *$")


def rewrite(text: str) -> str:
    """The docstring ``text`` in Markdown: roles as code spans, ``::`` as ``:``, tables as tables."""
    text = _ROLE.sub(lambda match: f"`{match.group(1)}`", text)
    text = _LITERAL_INTRO.sub(r"\1:", text)
    text = _BARE_LITERAL.sub("", text)
    return tables(text)


def tables(text: str) -> str:
    """Every reST simple table in ``text`` as a Markdown table (other lines untouched)."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        border = _BORDER.match(lines[i])
        end = _table_end(lines, i) if border else None
        if border is None or end is None:
            out.append(lines[i])
            i += 1
            continue
        out += ["", *_markdown_table(lines[i : end + 1], border["indent"]), ""]
        i = end + 1
    return "\n".join(out)


def _table_end(lines: list[str], start: int) -> int | None:
    """The closing border of the table opening at ``start``, or None if it is no table.

    A table is the run of non-blank lines from its top border, ending in a border: three
    borders when it has a header row, two when it has none.
    """
    end = start
    while end + 1 < len(lines) and lines[end + 1].strip():
        end += 1
    borders = sum(1 for line in lines[start : end + 1] if _BORDER.match(line))
    return end if borders in (2, 3) and _BORDER.match(lines[end]) else None


def _markdown_table(block: list[str], indent: str) -> list[str]:
    spans = [match.start() for match in re.finditer(r"=+", block[0])]
    borders = [j for j, line in enumerate(block) if _BORDER.match(line)]
    header_rows = block[borders[0] + 1 : borders[1]] if len(borders) == 3 else []
    body_start = borders[1] + 1 if len(borders) == 3 else borders[0] + 1
    header = _rows(header_rows, spans) or [[""] * len(spans)]
    body = _rows(block[body_start : borders[-1]], spans)
    lines = [_row(cells) for cells in header]
    lines.insert(1, "|" + "---|" * len(spans))
    lines += [_row(cells) for cells in body]
    return [f"{indent}{line}" for line in lines]


def _rows(lines: list[str], spans: list[int]) -> list[list[str]]:
    """Cut lines into cells at the border's columns; a blank first cell continues a row."""
    rows: list[list[str]] = []
    for line in lines:
        if not line.strip():
            continue
        bounds = [*spans[1:], None]
        cells = [line[start:end].strip() for start, end in zip(spans, bounds, strict=True)]
        if rows and not cells[0]:
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return rows


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _cell(text: str) -> str:
    """A cell's text, safe in a Markdown table: ``|`` escaped, ``<c>`` kept as text, not HTML."""
    parts = re.split(r"(`+[^`]*`+)", text.replace("|", "\\|"))
    return "".join(part if part.startswith("`") else part.replace("<", "&lt;") for part in parts)


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring as it is loaded (see :func:`rewrite`).

    Also drops the "value" of an attribute that is only assigned in ``__init__``
    (``self.quota = QuotaManager(...)``): that is the constructor's code, not a default.
    """

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the object's docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
        if isinstance(obj, griffe.Attribute) and _only_set_in_init(obj.labels):
            obj.value = None


def _only_set_in_init(labels: set[str]) -> bool:
    return "instance-attribute" in labels and "class-attribute" not in labels
