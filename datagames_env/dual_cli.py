"""``datagames dual ...``: the shared command line (:mod:`datagames_env.harness.cli`) with ``dual_default`` as the
default config; names kept for imports written before the shared harness. A dual policy spec is ``UPLOAD`` or
``UPLOAD/LABELER`` (parsed by :func:`datagames_env.policy.parse_policy_spec`)."""

from __future__ import annotations

import sys

from .harness.cli import main as _main
from .harness.reports.dual import PRIVACY_FIELDS, ROUND_FIELDS, summarise, summary_markdown


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"random/random"`` -> ("random", "random"); ``"entropy"`` -> ("entropy", None)."""
    from .policy import parse_policy_spec

    parsed = parse_policy_spec(spec, "dual")
    upload = parsed.text[: -len(parsed.labeler) - 1] if parsed.labeler else parsed.text
    return upload, parsed.labeler


def main(argv: list[str] | None = None) -> int:
    return _main(["dual", *(sys.argv[1:] if argv is None else argv)])


__all__ = ["PRIVACY_FIELDS", "ROUND_FIELDS", "main", "split_spec", "summarise", "summary_markdown"]

if __name__ == "__main__":
    sys.exit(main())
