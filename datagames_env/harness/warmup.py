"""Compile the numba kernels ahead (``datagames warmup``, run by ``make install``), and tell a first run that they
compile once: numba caches them beside the module (or in ``$NUMBA_CACHE_DIR``), but the first process on a fresh
machine spends a minute or two compiling before the first round, silently."""

from __future__ import annotations

import os
import time
from pathlib import Path

COMPILE_NOTICE = ("first run on this machine: compiling the numba kernels once (1-2 min; cached afterwards, "
                  "`datagames warmup` or `make install` does it ahead)")


def kernels_compiled() -> bool:
    """Whether numba's cache holds every kernel of ``datagames_env.core.kernels`` as its source stands now (index
    files are named ``kernels.<function>-<first line>.py<version>.nbi``: an edited module needs new ones)."""
    import sys

    from ..core import kernels

    version = f"py{sys.version_info[0]}{sys.version_info[1]}"
    wanted = {f"kernels.{f.py_func.__name__}-{f.py_func.__code__.co_firstlineno}.{version}.nbi"
              for f in vars(kernels).values()
              if hasattr(f, "py_func") and f.targetoptions.get("inline") != "always"}  # inlined: never cached alone
    places = [Path(kernels.__file__).parent / "__pycache__", Path.home() / ".cache" / "numba"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.insert(0, Path(os.environ["NUMBA_CACHE_DIR"]))
    found = {p.name for place in places if place.is_dir() for p in place.rglob("kernels.*.nbi")}
    return bool(wanted) and wanted <= found


def notice_if_compiling(console) -> None:
    if not kernels_compiled():
        console.print(f"[yellow]{COMPILE_NOTICE}[/]")


def compile_kernels(log=print) -> float:
    """Play tiny episodes that call every kernel with the types the scenarios use; returns the seconds spent."""
    from ..policy import make_policy
    from ..faces.pettingzoo import parallel_env as make_parallel_env
    from .episode import run_episode

    started = time.perf_counter()
    tiny = {"n_robots": 2, "rounds": 2, "obs_per_round": 20, "n_cache": 2}
    for config, overrides, policies in (
            ("default", {**tiny, "action_mode": "allocation"}, ("random", "greedy")),
            ("default", {**tiny, "action_mode": "selection"}, ("random", "greedy")),
            ("dual_default", {**tiny, "label_budget": 2, "initial_cloud_size": 20, "perception.train_steps": 5,
                              "perception.tier": "paper"}, ("random", "greedy"))):
        env = make_parallel_env(config, **overrides)
        for name in policies:
            run_episode(env, make_policy(name, env), seed=0)
        log(f"compiled the kernels {config} uses ({overrides.get('action_mode', 'scores')}): "
            f"{time.perf_counter() - started:.0f} s so far")
    return time.perf_counter() - started


def warm_perception(log=print) -> float:
    """Build the fast perception tier's cache (the pretrained extractor) of every scenario's default config, as its
    row of the scenario table names it; returns the seconds spent (a warm cache is only checked: milliseconds)."""
    from ..scenarios import SCENARIOS, entry_point

    started = time.perf_counter()
    for name, info in SCENARIOS.items():
        if info.warm is None:
            continue
        files = entry_point(info.warm)(info.default_config)
        size = sum(f.stat().st_size for f in files if f.exists()) / 2**20
        log(f"fast perception of {info.default_config}: {len(files)} cache file(s), {size:.1f} MiB "
            f"({time.perf_counter() - started:.0f} s so far)")
    return time.perf_counter() - started


if __name__ == "__main__":  # python -m datagames_env.harness.warmup (what `datagames warmup` runs)
    print(f"kernels ready ({compile_kernels():.0f} s)")
    print(f"fast perception ready ({warm_perception():.0f} s)")
