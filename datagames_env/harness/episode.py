"""One episode loop for every scenario: ``run_episode(env, policy, seed)`` and its picklable job form ``run_job``.

The loop is the same everywhere (reset, act, step until ``env.agents`` is empty, time the policy); what a round
and an episode record hold is the scenario's reporter's (``harness.reports``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..policy import make_policy, parse_policy_spec, scenario_of_env
from ..scenarios import DEFAULT_SCENARIO
from .reports import reporter


@dataclass(frozen=True)
class Job:
    config: dict           # the scenario's validated config as a dict (picklable, JSON-able); names its scenario
    policy: str            # a policy spec (datagames_env.policy)
    seed: int


def run_episode(env, policy, seed: int, on_round=None, name: str | None = None) -> dict:
    """Play one episode; the record (plain JSON types) has everything the tables and plots need.
    ``on_round(record_of_the_round)`` is called after every step (progress bars)."""
    rep = reporter(scenario_of_env(env))
    started = time.perf_counter()
    observations, infos = env.reset(seed=seed)
    policy.reset(seed)
    rounds = [rep.initial_round(env, infos)]
    decide_total, messages = 0.0, 0
    while env.agents:
        acting = [a for a in env.agents if infos[a].get("online", True)]  # offline robots (faults) may not act
        if len(observations) != len(acting):
            observations = {a: observations[a] for a in acting}
            infos = {a: infos[a] for a in acting}
        t = time.perf_counter()
        actions = policy.act(observations, infos) if observations else {}  # every robot offline: nobody acts
        decide = time.perf_counter() - t
        decide_total += decide
        observations, rewards, _, _, infos = env.step(actions)
        stats = getattr(policy, "last_stats", None) or {}
        messages += int(stats.get("messages", 0))
        rounds.append(rep.round_record(env, len(rounds), rewards, infos, stats, decide))
        if on_round is not None:
            on_round(rounds[-1])
    episode = {"policy": name or str(getattr(policy, "name", type(policy).__name__)), "seed": int(seed),
               "privileged": bool(getattr(policy, "privileged", False)), "rounds": rounds, "messages": messages,
               "policy_time_s": decide_total}
    episode.update(rep.finish(env, episode, infos))
    episode["wall_s"] = time.perf_counter() - started
    return episode


def build_env(config, spec=None, **overrides):
    """The env a job plays in: the config's scenario, with the overrides a spec carries (dual's labeler)."""
    from ..faces.pettingzoo import parallel_env as make_parallel_env

    return make_parallel_env(config, **{**overrides, **(spec.env_overrides if spec is not None else {})})


def run_job(job: Job, on_round=None, env=None) -> dict:
    """One episode of one policy spec on a fresh env from the job's config (or ``env``, built from it)."""
    spec = parse_policy_spec(job.policy, job.config.get("scenario", DEFAULT_SCENARIO))
    env = env if env is not None else build_env(job.config, spec)
    return run_episode(env, make_policy(spec, env), job.seed, on_round, name=job.policy)
