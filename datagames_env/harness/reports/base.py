"""What every scenario's results writer implements; the harness (episode loop, evaluation, CLI) reads only this."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...scenarios import DEFAULT_SCENARIO


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

    def write_files(self, out: Path, payload: dict, ctx, baseline: str | None = None) -> dict[str, dict]:
        """The scenario's CSV, plots and summary.md; returns ``{figure file: figure_info}``."""
        raise NotImplementedError

    def labels(self, policies: list[str], ctx) -> dict[str, str]:
        """How tables and figures name each policy spec (``policy_labels``; dual adds the labeler)."""
        return policy_labels(policies, self.scenario)

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


def policy_labels(policies: list[str], scenario: str = DEFAULT_SCENARIO) -> dict[str, str]:
    """One labelling rule for every table and figure: a spec's short label (``PolicySpec.label``:
    ``rllib:runs/train/<run>/checkpoint`` -> ``rllib:<run>``), the text of anything else. Specs whose short labels
    would coincide (two runs of one name in different folders) keep their full text."""
    from collections import Counter

    from ...policy import parse_policy_spec

    labels = {}
    for policy in policies:
        try:
            labels[policy] = parse_policy_spec(policy, scenario).label
        except ValueError:  # a policy object's name, or a spec of a registry this process does not hold
            labels[policy] = policy
    counts = Counter(labels.values())
    return {p: label if counts[label] == 1 else p for p, label in labels.items()}


def policy_label(policy: str, scenario: str = DEFAULT_SCENARIO) -> str:
    """``rllib:runs/train/default-ppo-.../checkpoint`` -> ``rllib:default-ppo-...`` (``policy_labels`` of one)."""
    return policy_labels([policy], scenario)[policy]


# -- spread: sample standard deviation over seeds, and none at all for one seed (not a misleading "± 0.0") -------
def mean_sd(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1); the deviation is None for fewer than two values."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return float("nan"), None
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else None


def fmt_pm(mean: float, sd: float | None, spec: str = ".2f", scale: float = 1.0) -> str:
    """``12.30 ± 0.40``, or ``12.30`` alone when there is no spread to show (one seed)."""
    text = f"{scale * mean:{spec}}"
    return text if sd is None else f"{text} ± {scale * sd:{spec}}"


def seeds_note(n: int) -> str:
    """What a table's numbers are: ``3 seeds (mean ± sd)`` or ``1 seed (n=1, no spread)``."""
    return f"{n} seeds (mean ± sd)" if n > 1 else "1 seed (n=1, no spread)"


def over_seeds(n: int) -> str:
    """The spread a figure shows, for its title: ``mean ± sd over 3 seeds`` or ``1 seed``."""
    return f"mean ± sd over {n} seeds" if n > 1 else "1 seed"


def band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-column mean and sample standard deviation over the rows (seeds); None for one row."""
    values = np.asarray(values, dtype=np.float64)
    return values.mean(axis=0), values.std(axis=0, ddof=1) if len(values) > 1 else None


# -- figures: constrained layout, saved with a tight box; each writer returns what its figures show ---------------
def pyplot():
    """matplotlib's pyplot on the file backend (no display in CI, workers or over ssh)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """``plt.subplots`` with constrained layout (labels and outside legends get their room; nothing is cut)."""
    return pyplot().subplots(nrows, ncols, layout="constrained", **kwargs)


def outside_legend(fig, fontsize: float = 8):
    """One legend for the whole figure, outside the plots (constrained layout makes room; the plots keep their
    width and the title its place): below them, or at the right where a figure-wide x label takes the bottom."""
    handles, labels = [], []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if fig.get_supxlabel():
        return fig.legend(handles, labels, loc="outside right upper", fontsize=fontsize, frameon=False)
    return fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=fontsize,
                      frameon=False)


def policy_colors(labels: list[str]) -> dict[str, str]:
    """One color per policy, by its place in the evaluation's list: the same in every figure of a folder. Greys
    are left out: black and grey mark references (targets, bounds, baselines)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = [c for c in (*colormaps["tab10"].colors, *colormaps["tab20"].colors[1::2])
               if len({round(v, 2) for v in c[:3]}) > 1]
    return {label: to_hex(palette[k % len(palette)]) for k, label in enumerate(labels)}


def figure_info(fig, **extra) -> dict:
    """What a figure shows, for tests and callers: titles, axis labels, legend entries, labelled lines (with
    their colors), every visible name (legends, lines, ticks, panel titles), scatter points and error bars."""
    from matplotlib.collections import PathCollection
    from matplotlib.colors import to_hex
    from matplotlib.container import ErrorbarContainer

    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    legends = [lg for lg in (*fig.legends, *(ax.get_legend() for ax in axes)) if lg is not None]
    legend = [t.get_text() for lg in legends for t in lg.get_texts()]
    infos, names = [], list(legend)
    for ax in axes:
        lines = [(line.get_label(), to_hex(line.get_color())) for line in ax.get_lines()
                 if not line.get_label().startswith("_")]
        ticks = [t.get_text() for t in (*ax.get_xticklabels(), *ax.get_yticklabels()) if t.get_text()]
        infos.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "lines": lines})
        names += [label for label, _ in lines] + ticks + [ax.get_title()]
    title = fig.get_suptitle() or (axes[0].get_title() if len(axes) == 1 else "")
    info = {"title": title, "supxlabel": fig.get_supxlabel(), "supylabel": fig.get_supylabel(), "axes": infos,
            "legend": legend, "names": [n for n in names if n],
            "points": sum(len(c.get_offsets()) for ax in axes for c in ax.collections if isinstance(c, PathCollection)),
            "error_bars": sum(isinstance(c, ErrorbarContainer) for ax in axes for c in ax.containers)}
    info.update(extra)
    return info


def save_figure(fig, path: Path, dpi: int, **extra) -> dict:
    """Write ``fig`` (tight box: no label is cut) and close it; returns its ``figure_info``."""
    info = figure_info(fig, **extra)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return info


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
