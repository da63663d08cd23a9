"""What every scenario's results writer implements; the harness (episode loop, evaluation, CLI) reads only this."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class Reporter:
    """One scenario's part of the harness: what a round / an episode record holds, the summary and the files.

    ``ctx`` is what the writers read: the validated config (``context``), or for scenarios whose tables need the
    world (domain names, robots), an env built from the config (no model is trained for that)."""

    scenario = "base"
    default_policy = "random"
    default_policies = "random"
    default_seeds = 3
    data_dir_key = "dataset.data_dir"   # the config key --data-dir sets
    reuse_env = False                   # one env for every episode in a process (its initial models train once)
    files: tuple[str, ...] = ()         # what write_files writes besides results.json

    @property
    def default_config(self) -> str:
        from ...scenarios import SCENARIOS

        return SCENARIOS[self.scenario].default_config

    def context(self, env) -> Any:
        return env.config

    def context_from_config(self, config: dict, **overrides) -> Any:
        from ...scenarios import load_scenario_config

        return load_scenario_config(config, **overrides)

    def initial_round(self, env, infos: dict) -> dict:
        raise NotImplementedError

    def round_record(self, env, index: int, rewards: dict, infos: dict, stats: dict, decide_s: float) -> dict:
        raise NotImplementedError

    def finish(self, env, episode: dict, infos: dict) -> dict:
        """Episode-level fields added to the record after the last round."""
        return {}

    def payload_extras(self, ctx) -> dict:
        return {}

    def summarise(self, payload: dict, ctx) -> dict:
        raise NotImplementedError

    def summary_markdown(self, payload: dict, ctx, baseline: str | None = None) -> str:
        raise NotImplementedError

    def write_files(self, out: Path, payload: dict, ctx, baseline: str | None = None) -> None:
        raise NotImplementedError

    def run_table(self, episode: dict, ctx):
        """A rich renderable for ``datagames run``."""
        raise NotImplementedError

    def describe(self, ctx) -> str:
        """One line about the instance for ``datagames run``; scenarios append their own knobs."""
        cfg = ctx.config if hasattr(ctx, "config") else ctx
        return f"{cfg.n_robots} robots, {cfg.rounds} rounds, {cfg.obs_per_round} obs/round"

    def round_progress(self, record: dict) -> str:
        """The progress bar's text after a round."""
        return ""


def policy_label(policy: str) -> str:
    """``rllib:runs/train/default-ppo-.../checkpoint`` -> ``rllib:default-ppo-...`` for tables and legends."""
    kind, sep, path = policy.partition(":")
    if not sep or kind not in ("rllib", "rllib-sample", "sb3", "sb3-sample"):
        return policy
    p = Path(path)
    return f"{kind}:{p.parent.name if p.name == 'checkpoint' else p.name}"


def pyplot():
    """matplotlib's pyplot on the file backend (no display in CI, workers or over ssh)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int) -> None:
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
