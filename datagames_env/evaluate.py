"""Kept for imports written before the shared harness: see :mod:`datagames_env.harness.evaluate`."""

from .harness.episode import Job, run_episode, run_job
from .harness.evaluate import evaluate, report, write_results
from .harness.reports.base import policy_label
from .harness.reports.datagames import episode_lower_bound, summarise, summary_markdown

__all__ = ["Job", "episode_lower_bound", "evaluate", "policy_label", "report", "run_episode", "run_job",
           "summarise", "summary_markdown", "write_results"]
