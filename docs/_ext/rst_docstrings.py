"""Griffe extension for the API reference: the project's docstrings are reST-flavoured (Sphinx roles such as
:class:`~pkg.Name`, simple tables framed by ``====`` rules, as Gymnasium's and PettingZoo's environment docstrings
are); the reference renders Markdown. This rewrites roles to code spans, simple tables to pipe tables and section
titles to bold lines when griffe loads an object, so the sources keep their style."""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?[a-z]+:`(~?)([^`]+)`")
_RULE = re.compile(r"^\s*=+(\s+=+)+\s*$")
_UNDERLINE = re.compile(r"^\s*([-=~^])\1{2,}\s*$")


def _role(match: re.Match) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1]}`" if match.group(1) else f"`{target}`"


def _cells(line: str, starts: list[int]) -> list[str]:
    bounds = [*starts[1:], None]
    return [line[a:b].strip() if b else line[a:].strip() for a, b in zip(starts, bounds)]


def _rows(lines: list[str], starts: list[int]) -> list[list[str]]:
    rows: list[list[str]] = []
    for line in lines:
        cells = _cells(line, starts)
        if rows and not cells[0]:  # a continuation line: its text belongs to the row above
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    return rows


def _markdown(header: list[str] | None, rows: list[list[str]], indent: str) -> list[str]:
    def line(cells: list[str]) -> str:
        return indent + "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    width = len(rows[0]) if rows else len(header or [])
    out = [line(header or [""] * width), indent + "|" + "---|" * width]
    return ["", *out, *[line(r) for r in rows], ""]


def rst_sections_to_bold(text: str) -> str:
    """A reST section title (a line underlined with ``---`` / ``===``) becomes a bold line: headings inside a
    docstring would otherwise enter the page's table of contents."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        title = lines[i].strip()
        if (title and i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1])
                and len(lines[i + 1].strip()) >= len(title) - 2):
            out.extend([f"**{title}**", ""])
            i += 2
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


def rst_tables_to_markdown(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not _RULE.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        rule = lines[i]
        indent = rule[: len(rule) - len(rule.lstrip())]
        starts = [m.start() for m in re.finditer(r"=+", rule)]
        j = i + 1
        while j < len(lines) and not _RULE.match(lines[j]):
            j += 1
        if j == len(lines):  # no closing rule: not a table
            out.append(lines[i])
            i += 1
            continue
        first = lines[i + 1:j]
        k = j + 1
        while k < len(lines) and lines[k].strip() and not _RULE.match(lines[k]):
            k += 1
        if k < len(lines) and _RULE.match(lines[k]):  # three rules: a header row, then the body
            header, body, end = _rows(first, starts)[0], lines[j + 1:k], k
        else:
            header, body, end = None, first, j
        out.extend(_markdown(header, _rows(body, starts), indent))
        i = end + 1
    return "\n".join(out)


class RstDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            text = _ROLE.sub(_role, obj.docstring.value)
            obj.docstring.value = rst_tables_to_markdown(rst_sections_to_bold(text))
