"""Evaluation for every scenario: every policy on the same seeds (common random numbers), one results folder.

``datagames eval --config mnist_datagames --policies uniform,random,greedy,interactive,oracle --seeds 10``

Writes ``results.json`` (config, scenario, policies, seeds, summary and every episode), ``marl_eval.json`` (the
marl-eval format: ``harness.marl_eval``) and the scenario's CSV,
plots and ``summary.md`` (``harness.reports``). A job is (policy, seed); jobs run in this process, in local
processes or as Ray tasks: each builds its env from the config and seed, so results do not depend on where they
ran. Scenarios whose envs train their initial models once (``p2p``) play every episode in one env per process.
"""

from __future__ import annotations

import json
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ..policy import PolicySpec, make_policy, missing_checkpoint, parse_policy_spec, spec_grammar
from ..scenarios import DEFAULT_SCENARIO, load_scenario_config, scenario_of
from .episode import Job, build_env, run_episode, run_job
from .marl_eval import write_marl_eval
from .reports import json_default, reporter


def _worker_init() -> None:
    # one intra-op thread per worker: several workers on few cores must not oversubscribe
    import torch

    torch.set_num_threads(1)


def _run_pool(jobs: list[Job], workers: int, on_done) -> list[dict]:
    import multiprocessing

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        return [on_done(future.result()) for future in as_completed(futures)]


def _run_ray(jobs: list[Job], address: str, on_done) -> list[dict]:
    import ray

    from datagames_env.harness.ray_runtime import start_ray

    start_ray(address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(run_job)
    pending = [remote.remote(job) for job in jobs]
    results = []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        results.append(on_done(ray.get(done[0])))
    return results


def check_policies(specs: list[Any], scenario: str) -> list[PolicySpec | Any]:
    """Parse every string spec before any work starts: unknown names and missing checkpoints are one error."""
    parsed, unknown, errors = [], [], []
    for spec in specs:
        if not isinstance(spec, str):
            parsed.append(spec)  # a policy object (in-process only)
            continue
        try:
            parsed.append(parse_policy_spec(spec, scenario))
        except ValueError as exc:
            unknown.append(spec)
            errors.append(str(exc).partition("; known ")[0])
    if unknown:
        raise ValueError(f"unknown policies {unknown} ({'; '.join(errors)}); known {spec_grammar(scenario)}")
    missing = [p.text for p in parsed if isinstance(p, PolicySpec) and missing_checkpoint(p)]
    if missing:
        raise ValueError(f"checkpoints not found: {missing}")
    return parsed


def evaluate(config: Any, policies: list[Any], seeds: list[int], out_dir: str | Path | None = None,
             workers: int = 1, ray_address: str | None = None, progress: bool = True, baseline: str | None = None,
             env=None, **overrides) -> dict:
    """Run every (policy, seed) episode of the config's scenario, write the results folder when ``out_dir`` is
    given, return the payload. ``policies``: specs (``datagames_env.policy``) or policy objects."""
    scenario = scenario_of(config, **overrides)
    rep = reporter(scenario)
    cfg = env.config if env is not None else load_scenario_config(config, **overrides)
    parsed = check_policies(list(policies), scenario)
    names = [p.text if isinstance(p, PolicySpec) else str(getattr(p, "name", type(p).__name__)) for p in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must be distinct, got {names}")
    config_dict = cfg.model_dump()
    jobs = [Job(config_dict, name, seed) for name in names for seed in seeds]

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=not progress)
    started = time.perf_counter()
    in_process = env is not None or rep.reuse_env or any(not isinstance(p, PolicySpec) for p in parsed)
    with bar:
        task = bar.add_task(f"{len(names)} policies x {len(seeds)} seeds", total=len(jobs))

        def on_done(record: dict) -> dict:
            bar.update(task, advance=1, description=f"{record['policy']} seed {record['seed']} done")
            return record

        records = None
        if ray_address and not in_process:
            try:
                records = _run_ray(jobs, ray_address, on_done)
            except ImportError:
                warnings.warn("ray is not installed (pip install 'ray[default]'); running in local processes")
            except Exception as exc:  # an unreachable cluster must not lose the evaluation
                warnings.warn(f"Ray cluster at {ray_address!r} unavailable ({exc}); running in local processes")
        if records is None and workers > 1 and not in_process:
            records = _run_pool(jobs, workers, on_done)
        envs: dict[str, Any] = {}  # the envs played in this process, kept for the summary's context
        if records is None:
            records = _run_here(parsed, names, seeds, cfg, env, rep, envs, bar, task, on_done)
    elapsed = time.perf_counter() - started
    order = {name: k for k, name in enumerate(names)}
    records.sort(key=lambda r: (order[r["policy"]], r["seed"]))
    payload = {"scenario": scenario, "config": config_dict, "policies": names, "seeds": list(seeds),
               "elapsed_s": elapsed, "summary": {}, "episodes": records,
               "task": Path(str(config)).stem if isinstance(config, (str, Path)) else "custom"}
    live = env if env is not None else envs.get(_env_key(config_dict, {}))
    ctx = rep.context(live) if live is not None else rep.context_from_config(config_dict)
    payload.update(rep.payload_extras(ctx))
    payload["summary"] = rep.summarise(payload, ctx)
    if out_dir is not None:
        write_results(out_dir, payload, ctx, baseline)
    return payload


def _env_key(config: dict, overrides: dict) -> str:
    return json.dumps([config, overrides], sort_keys=True, default=str)


def _run_here(parsed, names, seeds, cfg, env, rep, envs, bar, task, on_done) -> list[dict]:
    """Every episode in this process; ``reuse_env`` scenarios (and a given ``env``) keep one env per spec
    overrides in ``envs``, so their initial models train once."""
    config = cfg.model_dump()
    records = []
    for spec, name in zip(parsed, names):
        overrides = spec.env_overrides if isinstance(spec, PolicySpec) else {}
        if env is not None and not overrides:
            episode_env = env
        elif rep.reuse_env or env is not None:
            key = _env_key(config, overrides)
            if key not in envs:
                envs[key] = build_env(config, **overrides)
            episode_env = envs[key]
        else:
            episode_env = None
        for seed in seeds:
            run_env = episode_env if episode_env is not None else build_env(config, **overrides)
            policy = make_policy(spec, run_env)

            def on_round(record, name=name, seed=seed):
                bar.update(task, description=f"{name} seed {seed} round {record['round']}: "
                                             f"{rep.round_progress(record)}")

            records.append(on_done(run_episode(run_env, policy, seed, on_round, name=name)))
    return records


def write_results(out_dir: str | Path, payload: dict, ctx=None, baseline: str | None = None) -> Path:
    """``results.json``, ``marl_eval.json`` (``harness.marl_eval``) and the scenario's CSV, plots and ``summary.md``
    of an evaluation payload."""
    rep = reporter(payload.get("scenario", DEFAULT_SCENARIO))
    ctx = ctx if ctx is not None else rep.context_from_config(payload["config"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=json_default))
    rep.write_files(out, payload, ctx, baseline)
    write_marl_eval(out, payload)
    return out


def report(folder: str | Path, baseline: str | None = None, **overrides) -> dict:
    """Rewrite a results folder's summary, CSV and plots from its ``results.json`` (no episode is played)."""
    out = Path(folder)
    path = out / "results.json"
    if not path.is_file():
        raise ValueError(f"no results.json in {out}")
    payload = json.loads(path.read_text())
    if "episodes" not in payload and "records" in payload:  # dual folders written before the shared harness
        payload["episodes"] = payload.pop("records")
    payload.setdefault("scenario", payload["config"].get("scenario", DEFAULT_SCENARIO))
    payload.setdefault("task", out.name)  # folders written before marl_eval.json: the folder is named by config
    rep = reporter(payload["scenario"])
    ctx = rep.context_from_config(payload["config"], **overrides)
    payload["summary"] = rep.summarise(payload, ctx)
    write_results(out, payload, ctx, baseline)
    return payload
