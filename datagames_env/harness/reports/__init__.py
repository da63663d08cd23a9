"""One results writer, a reporter per scenario: what a round and an episode record hold, the summary, the CSV and
the plots. ``reporter("p2p")``; a new scenario names its reporter in its row of the
scenario table (``datagames_env.scenarios.SCENARIOS``)."""

from __future__ import annotations

from .base import Reporter, json_default, policy_label, policy_labels

from ...scenarios import SCENARIOS

REPORTERS: dict[str, str] = {name: info.reporter for name, info in SCENARIOS.items()}  # from the scenario table


def reporter(scenario: str) -> Reporter:
    """The reporter of ``scenario`` (its module is imported on first use: matplotlib stays off the import path)."""
    import importlib

    if scenario not in REPORTERS:
        raise ValueError(f"scenario '{scenario}' has no results writer; known: {sorted(REPORTERS)}")
    module, _, cls = REPORTERS[scenario].partition(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["REPORTERS", "Reporter", "json_default", "policy_label", "policy_labels", "reporter"]
