"""MkDocs hook: GitHub needs ``\\|`` for a pipe inside a code span in a table cell, Python-Markdown's tables keep
pipes in code spans as they are and would show the backslash; drop it there so both render the pages alike."""

from __future__ import annotations

import re

_CODE = re.compile(r"`[^`\n]*\\\|[^`\n]*`")


def on_page_markdown(markdown: str, **kwargs) -> str:
    return _CODE.sub(lambda m: m.group(0).replace("\\|", "|"), markdown)
