"""Imitation warm start for the allocation module: behaviour cloning of an analytic policy, then PPO.

``datagames train --imitate oracle`` (or ``interactive``, ``greedy``) plays ``--imitation-episodes`` episodes of the
expert on training seeds (``IMITATION_FIRST_SEED`` on, far from the evaluation seeds), records every robot's own
observation and the integer upload counts per predicted class that the expert's action turns into, and maximises
the exact multinomial log-probability of those counts under the module's class logits (the distribution PPO then
samples from). The value head is fitted to the expert's discounted returns-to-go at the same time, so PPO starts
with a critic that matches the policy it starts from. The module's state is saved in the run folder and loaded
into the built algorithm (:func:`agents.rllib_train.load_module_state`: every learner, then the env runners), not
through ``RLModuleSpec.load_state_path``: that path would be pickled into every checkpoint, and
``Algorithm.from_checkpoint`` would follow it on another machine. The checkpoint keeps a copy (``imitation_module``).

The actor still reads only its robot's observation: cloning Oracle teaches it the best decentralised guess of
what the privileged joint solution would do in its place.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

IMITATION_FIRST_SEED = 1_000_000  # expert episodes never share seeds with evaluation (0-999)
IMITATION_MODULE = "imitation_module"  # the clone, in the run folder and copied into its checkpoints
EXPERTS = ("oracle", "interactive", "interactive-sum", "greedy")


def collect_expert_data(config: Any, overrides: dict, expert: str, episodes: int, gamma: float,
                        first_seed: int = IMITATION_FIRST_SEED, with_state: bool = False,
                        progress: bool = False, message_sweeps: int = 0, announcer=None) -> dict[str, np.ndarray]:
    """``{"obs": (M, obs_dim), "counts": (M, C), "returns": (M,)}`` over every robot-step of ``episodes`` episodes,
    and ``"state"`` (M, state_dim), the global state at each step, with ``with_state`` (centralised critics).

    With ``message_sweeps`` K (learned communication, :mod:`datagames_env.faces.comm`) every robot-step gives K + 1 rows, one per
    decision of the round, all labelled with the expert's counts; the messages the robots read are the expert's
    counts announced by the others (teacher forcing), or, with ``announcer`` (observation rows -> shares: the policy
    being cloned), what the policy itself would announce: DAgger on the messages, so the clone learns to read the
    announcements it will really get (teacher-forced clones overreact to them: measured 16.3 -> 30.5 after one sweep)."""
    from datagames_env.faces.comm import MessageSweeps

    from rich.progress import track

    from datagames_env.policy import make_policy
    from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env
    from datagames_env.scenarios import scenario_of

    if expert not in EXPERTS:
        raise ValueError(f"--imitate: '{expert}' is not one of {', '.join(EXPERTS)}")
    if scenario_of(config, **overrides) != "datagames":
        raise ValueError("--imitate: the analytic experts act in the datagames scenario only")
    env = make_parallel_env(config, **overrides)
    if env.config.action_mode != "allocation":
        raise ValueError("--imitate: behaviour cloning is built for action_mode allocation (class counts)")
    policy = make_policy(expert, env)
    obs_rows, count_rows, returns, states = [], [], [], []
    for episode in track(range(episodes), description=f"imitation: {expert} episodes", disable=not progress):
        seed = first_seed + episode
        observations, infos = env.reset(seed=seed)
        policy.reset(seed)
        rewards_of_episode = []
        while env.agents:
            agents = list(env.agents)
            actions = policy.act(observations, infos)
            shares = np.stack([np.clip(np.asarray(actions[a], dtype=np.float64), 0.0, 1.0) for a in agents])
            counts = env.core.upload_counts(shares[None])[0]  # what the environment will upload, per class
            decisions = [np.stack([observations[a] for a in agents])]
            if message_sweeps:
                protocol = MessageSweeps(message_sweeps, observations, infos, agents, env.obs_layout["gap"],
                                         env.n_classes)
                decisions = [protocol.observations()]
                while not protocol.executing:
                    protocol.announce(shares if announcer is None else announcer(decisions[-1]))
                    decisions.append(protocol.observations())
            obs_rows.extend(decisions)
            if with_state:
                state = np.repeat(np.asarray(env.state(), dtype=np.float32)[None], len(agents), axis=0)
                states.extend([state] * len(decisions))
            count_rows.extend([counts.astype(np.float32)] * len(decisions))
            observations, rewards, _, _, infos = env.step(actions)
            rewards_of_episode.append(float(rewards[agents[0]]))
        to_go, running = [], 0.0
        for reward in reversed(rewards_of_episode):
            running = reward + gamma * running
            to_go.append(running)
        per_step = np.repeat(np.asarray(to_go[::-1], dtype=np.float32)[:, None], env.config.n_robots, axis=1)
        returns.extend(np.repeat(per_step, 1 + message_sweeps, axis=0))  # rows: round-major, decision-minor
    env.close()
    data = {"obs": np.concatenate(obs_rows).astype(np.float32), "counts": np.concatenate(count_rows),
            "returns": np.concatenate(returns).astype(np.float32)}
    if with_state:
        data["state"] = np.concatenate(states)
    return data


def multinomial_nll(logits, counts):
    """Mean negative multinomial log-likelihood of ``counts`` (the constant coefficient dropped)."""
    import torch

    return -(counts * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


def behaviour_clone(module, data: dict[str, np.ndarray], epochs: int = 30, lr: float = 1e-3, batch_size: int = 256,
                    seed: int = 0) -> dict[str, float]:
    """Fit the module's class logits to the expert's counts and its value head to the returns-to-go, in place.
    A centralised critic reads ``data["state"]`` after each observation."""
    import torch
    from ray.rllib.core.columns import Columns

    torch.manual_seed(seed)
    obs = torch.as_tensor(data["obs"])
    if getattr(module, "state_dim", 0):
        obs = torch.cat([obs, torch.as_tensor(data["state"])], dim=1)
    counts, returns = torch.as_tensor(data["counts"]), torch.as_tensor(data["returns"])
    optimiser = torch.optim.Adam(module.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = {}
    module.train()
    for _epoch in range(epochs):
        order = torch.randperm(len(obs), generator=generator)
        total_nll = total_vf = 0.0
        for start in range(0, len(obs), batch_size):
            idx = order[start:start + batch_size]
            batch = {Columns.OBS: obs[idx]}
            logits = module._forward(batch)[Columns.ACTION_DIST_INPUTS]
            nll = multinomial_nll(logits, counts[idx])
            vf = torch.mean((module.compute_values(batch) - returns[idx]) ** 2)
            optimiser.zero_grad()
            (nll + vf).backward()
            optimiser.step()
            total_nll += nll.item() * len(idx)
            total_vf += vf.item() * len(idx)
        history = {"nll": total_nll / len(obs), "value_mse": total_vf / len(obs)}
    module.eval()
    return history


def module_announcer(module):
    """Observation rows (N, D) -> the module's deterministic allocation as shares (N, C) (a centralised critic's
    state slot is zeros: the actor does not read it)."""
    import torch
    from ray.rllib.core.columns import Columns

    def announce(rows: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(rows, dtype=torch.float32)
        if getattr(module, "state_dim", 0):
            obs = torch.cat([obs, torch.zeros(len(obs), module.state_dim)], dim=1)
        with torch.no_grad():
            logits = module._forward({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
            action = module.get_inference_action_dist_cls().from_logits(logits).to_deterministic().sample()
        return ((action + 1.0) * 0.5).numpy()

    return announce


def warm_start(spec, settings, run_dir: Path, log=print) -> tuple[Path, dict]:
    """Behaviour-clone ``settings.imitate`` into a fresh module of ``spec``; save it to ``run_dir/imitation_module``
    and return that folder and a summary for the run's metadata."""
    started = time.perf_counter()
    first_seed = IMITATION_FIRST_SEED + 10_000 * settings.seed  # each training seed clones its own expert episodes
    log(f"imitation: {settings.imitation_episodes} {settings.imitate} episodes (seeds from {first_seed})")
    data = collect_expert_data(settings.config, settings.overrides, settings.imitate, settings.imitation_episodes,
                               settings.gamma, first_seed, with_state=settings.critic == "central",
                               progress=settings.progress, message_sweeps=settings.message_sweeps)
    collect_s = time.perf_counter() - started
    module = spec.build()
    if not hasattr(module, "allocate_n") or not module.allocate_n:
        raise ValueError("--imitate needs the class-scoring module with multinomial uploads (--model scoring "
                         "--allocation-dist multinomial)")
    fit = behaviour_clone(module, data, epochs=settings.imitation_epochs, seed=settings.seed)
    for dagger_round in range(settings.imitation_dagger_rounds if settings.message_sweeps else 0):
        # DAgger on the messages: the announcements the clone itself makes, the expert's labels
        own = collect_expert_data(settings.config, settings.overrides, settings.imitate, settings.imitation_episodes,
                                  settings.gamma, first_seed + 5_000 * (1 + dagger_round),
                                  with_state=settings.critic == "central", message_sweeps=settings.message_sweeps,
                                  announcer=module_announcer(module))
        data = {k: np.concatenate([data[k], own[k]]) for k in data}
        fit = behaviour_clone(module, data, epochs=max(1, settings.imitation_epochs // (1 + dagger_round)),
                              seed=settings.seed + 1 + dagger_round)
    path = run_dir / IMITATION_MODULE
    module.save_to_path(str(path.resolve()))
    summary = {"expert": settings.imitate, "episodes": settings.imitation_episodes, "first_seed": first_seed,
               "robot_steps": len(data["obs"]),
               "collect_s": collect_s, "fit_s": time.perf_counter() - started - collect_s, **fit}
    log(f"imitation: {len(data['obs']):,} robot-steps, multinomial NLL {fit['nll']:.3f}, value MSE "
        f"{fit['value_mse']:.4f} ({summary['collect_s']:.0f} s playing, {summary['fit_s']:.0f} s fitting)")
    return path, summary
