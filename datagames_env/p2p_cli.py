"""``datagames p2p ...``: the shared command line (:mod:`datagames_env.harness.cli`) with ``p2p_default`` as the
default config; names kept for imports written before the shared harness."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .harness.cli import main as _main
from .harness.episode import run_episode
from .harness.evaluate import evaluate, write_results
from .harness.reports.p2p import summarise, summary_markdown


def evaluate_p2p(config: Any, policies: list[Any], seeds: list[int], out_dir: str | Path | None = None,
                 progress: bool = True, env=None, **overrides) -> dict:
    """:func:`datagames_env.harness.evaluate.evaluate` on a p2p config (specs or policy objects)."""
    from .scenarios import scenario_of

    if env is None and scenario_of(config if config is not None else "p2p_default", **overrides) != "p2p":
        raise ValueError(f"evaluate_p2p: config {config!r} is not a p2p config; use datagames_env.harness.evaluate")
    return evaluate(config if config is not None else "p2p_default", policies, seeds, out_dir, progress=progress,
                    env=env, **overrides)


def main(argv: list[str] | None = None) -> int:
    return _main(["p2p", *(sys.argv[1:] if argv is None else argv)])


__all__ = ["evaluate_p2p", "main", "run_episode", "summarise", "summary_markdown", "write_results"]

if __name__ == "__main__":
    sys.exit(main())
