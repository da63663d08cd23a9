"""Rendering of a parallel env: an ``ansi`` text table, an ``rgb_array`` bar chart, ``human`` display."""

from __future__ import annotations

import numpy as np


def ansi_table(env) -> str:
    core = env.core
    cloud, target = core.cloud_counts[0], core.target_counts
    names = env.class_names
    width = max(5, *(len(n) for n in names))
    lines = [f"datagames_v0  round {core.round_index}/{core.cfg.rounds}  "
             f"{core.cfg.loss} distance {core.distance[0]:.3f}  cloud {cloud.sum():.0f} / target {target.sum():.0f}",
             f"{'class':<{width}}  {'cloud':>8}  {'target':>8}  {'gap':>8}"]
    for name, c, t in zip(names, cloud, target):
        lines.append(f"{name:<{width}}  {c:>8.0f}  {t:>8.1f}  {t - c:>8.1f}")
    return "\n".join(lines)


def _draw_bars(ax, env) -> None:
    core = env.core
    x = np.arange(core.n_classes)
    ax.bar(x - 0.2, core.cloud_counts[0], width=0.4, label="cloud", color="tab:green")
    ax.bar(x + 0.2, core.target_counts, width=0.4, label="target", color="tab:pink")
    ax.set_xticks(x, env.class_names, fontsize=8)
    ax.set_ylabel("samples")
    ax.set_title(f"round {core.round_index}/{core.cfg.rounds}  distance {core.distance[0]:.2f}")
    ax.legend(loc="upper right", fontsize=8)


def bar_chart_rgb(env) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100)  # no pyplot: no global figure state, works headless
    _draw_bars(fig.add_subplot(), env)
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def show_human(env, text: str) -> None:
    """A live matplotlib window when the backend is interactive; otherwise the text table on stdout."""
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend().lower()
    if backend in ("agg", "pdf", "svg", "ps", "cairo", "template") or "inline" in backend:
        print(text)
        return
    if getattr(env, "_human_fig", None) is None:
        env._human_fig = plt.figure(figsize=(6.4, 3.6))
    fig = env._human_fig
    fig.clf()
    _draw_bars(fig.add_subplot(), env)
    plt.pause(1.0 / env.metadata["render_fps"])


def close(env) -> None:
    fig = getattr(env, "_human_fig", None)
    if fig is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
        env._human_fig = None
