"""Trained policies behind the one policy protocol, loaded by checkpoint: ``rllib:PATH`` and ``sb3:PATH``.

``make_policy("rllib:runs/train/default-ppo-.../checkpoint", env)`` (``datagames_env.policy``, which registers
these classes by entry point) returns a policy whose ``act`` feeds each
robot's observation to its module (the shared one, or the robot's own) and returns the *deterministic* action:
the Gaussian's mean or the top-k picks of the Plackett-Luce scores, mapped to the action box as RLlib's
``normalize_actions`` does in training; ``rllib-sample:PATH`` / ``sb3-sample:PATH`` sample the policy instead,
seeded by the episode seed. These policies see only their robot's observation: they are not privileged.
"""

from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from .rllib_train import META_FILE, SHARED_MODULE


def _check_space(env, expected_shape: tuple, path: Path) -> None:
    shape = env.observation_space(env.possible_agents[0]).shape
    if tuple(shape) != tuple(expected_shape):
        raise ValueError(f"checkpoint {path}: trained on observations of shape {tuple(expected_shape)}, this environment "
                         f"has {tuple(shape)}; evaluate it on the config it was trained on")


def _read_meta(path: Path) -> dict:
    meta_file = path / META_FILE
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}


class _CheckpointPolicy:
    """What both checkpoint policies share: ``explore`` samples the policy (a parameter-shared policy may rely on
    its randomness to spread robots over classes: measure both), seeded by ``reset(seed)``, one seed per step."""

    privileged = False

    def __init__(self, explore: bool) -> None:
        self.explore = explore
        self._step_seed = 0

    def reset(self, seed: int | None = None) -> None:
        self._step_seed = 0 if seed is None else int(seed) * 1000

    @contextmanager
    def _seeded(self):
        import torch

        self._step_seed += 1
        with torch.random.fork_rng():
            torch.manual_seed(self._step_seed)
            yield

    def _sampling(self):
        return self._seeded() if self.explore else nullcontext()


class RLlibCheckpointPolicy(_CheckpointPolicy):
    """A policy from an RLlib checkpoint folder (the ``checkpoint`` of ``datagames train``)."""

    def __init__(self, env, path: str | Path, explore: bool = False) -> None:
        import torch
        from ray.rllib.core.rl_module.rl_module import RLModule

        super().__init__(explore)
        self.path = Path(path)
        modules_dir = self.path / "learner_group" / "learner" / "rl_module"
        if not modules_dir.is_dir():
            raise ValueError(f"rllib checkpoint: {self.path} has no learner_group/learner/rl_module folder; "
                             "pass the checkpoint folder that `datagames train` wrote")
        self.name = f"{'rllib-sample' if explore else 'rllib'}:{self.path}"
        self.torch = torch
        self.modules = {}
        for agent in env.possible_agents:
            module_id = agent if (modules_dir / agent).is_dir() else SHARED_MODULE
            if module_id not in self.modules:
                if not (modules_dir / module_id).is_dir():
                    raise ValueError(f"rllib checkpoint {self.path}: no module for {agent} (neither {agent} nor "
                                     f"{SHARED_MODULE})")
                module = RLModule.from_checkpoint(str((modules_dir / module_id).resolve()))
                module.eval()
                self.modules[module_id] = module
        self.module_of = {a: (a if a in self.modules else SHARED_MODULE) for a in env.possible_agents}
        first = next(iter(self.modules.values()))
        # a centralised critic's module reads [own observation, global state]; its actor reads only the first part,
        # so acting needs no state: the slot is filled with zeros (the policy stays decentralised)
        self.state_dim = int(getattr(first, "state_dim", 0) or 0)
        self.meta = _read_meta(self.path)
        # learned communication: the module was trained on observations with the message blocks (datagames_env.faces.comm)
        self.message_sweeps = int(self.meta.get("settings", {}).get("message_sweeps", 0) or 0)
        if str(getattr(first, "env_action", None)).startswith("interactive-fraction:"):
            self.message_sweeps = 0  # the sweeps are the solver's (faces.comm), not the module's decisions
        message_dim = 2 * env.n_classes + 1 if self.message_sweeps else 0
        _check_space(env, (first.observation_space.shape[0] - self.state_dim - message_dim,), self.path)
        if self.message_sweeps:
            self.gap_slice, self.n_classes = env.obs_layout["gap"], env.n_classes
        self.action_space = env.action_space(env.possible_agents[0])
        # a structured action (gap-fraction): the module acts in its own space, mapped to the env's as in training
        self.env_action = getattr(first, "env_action", None)
        if self.env_action is not None:
            self.action_space, self.n_cache, self.loss = first.action_space, env.config.n_cache, env.config.loss
        self.last_stats: dict = {}

    def act(self, observations: dict, infos: dict) -> dict:
        if not self.message_sweeps:
            actions = self._decide(observations)
            return actions if self.env_action is None else self._env_actions(actions, infos)
        from datagames_env.faces.comm import MessageSweeps

        agents = list(observations)
        protocol = MessageSweeps(self.message_sweeps, observations, infos, agents, self.gap_slice, self.n_classes)
        while True:
            rows = protocol.observations()
            actions = self._decide({a: rows[k] for k, a in enumerate(agents)})
            if protocol.executing:
                break
            protocol.announce(np.stack([actions[a] for a in agents]))
        self.last_stats = {"messages": protocol.message_count(), "sweeps": self.message_sweeps}
        return actions

    def _env_actions(self, fractions: dict, infos: dict) -> dict:
        """Greedy towards each robot's fraction of the gap, from its own infos (``baselines.fraction``; the vector
        runner's map in training, ``agents.rllib_vector_runner.greedy_fraction_actions``)."""
        from baselines.fraction import greedy_fraction_shares

        agents = list(fractions)
        first = infos[agents[0]]
        if self.env_action.startswith("interactive-fraction:"):  # agents.modules.SweepFractionModule
            from datagames_env.faces.comm import interactive_fraction_shares, sweep_messages

            sweeps = int(self.env_action.partition(":")[2])
            shares = interactive_fraction_shares(
                np.stack([infos[a]["feasible_matrix"] for a in agents])[None], np.asarray(first["cloud_counts"])[None],
                np.asarray(first["target_counts"]), np.stack([fractions[a][0] for a in agents])[None], self.n_cache,
                np.stack([infos[a]["available"] for a in agents])[None], sweeps)[0]
            self.last_stats = {"messages": sweep_messages(len(agents), sweeps), "sweeps": sweeps}
            return {a: shares[k].astype(np.float32) for k, a in enumerate(agents)}
        if self.env_action == "greedy-share":  # agents.share_module.GapShareModule: one map per policy (memory)
            from baselines.fraction import ShareMap

            if getattr(self, "_share_map", None) is None:
                self._share_map = ShareMap()
            shares = self._share_map(
                np.stack([infos[a]["feasible_matrix"] for a in agents])[None], np.asarray(first["cloud_counts"])[None],
                np.asarray(first["target_counts"]), np.stack([fractions[a][0] for a in agents])[None],
                np.stack([infos[a]["uploaded_true_labels"] for a in agents])[None], np.asarray([first["round"]]),
                self.n_cache, np.stack([infos[a]["available"] for a in agents])[None])[0]
            self.last_stats = {"messages": 0, "sweeps": 0}
            return {a: shares[k].astype(np.float32) for k, a in enumerate(agents)}
        shares = greedy_fraction_shares(np.stack([infos[a]["feasible_matrix"] for a in agents])[None],
                                        np.asarray(first["cloud_counts"])[None], np.asarray(first["target_counts"]),
                                        np.stack([fractions[a][0] for a in agents])[None], self.n_cache,
                                        np.stack([infos[a]["available"] for a in agents])[None], self.loss)[0]
        return {a: shares[k].astype(np.float32) for k, a in enumerate(agents)}

    def _decide(self, observations: dict) -> dict:
        from ray.rllib.core.columns import Columns

        actions = {}
        by_module: dict[str, list[str]] = {}
        for agent in observations:
            by_module.setdefault(self.module_of[agent], []).append(agent)
        low, high = self.action_space.low, self.action_space.high
        with self.torch.no_grad(), self._sampling():
            for module_id, agents in by_module.items():
                obs = self.torch.as_tensor(np.stack([observations[a] for a in agents]), dtype=self.torch.float32)
                if self.state_dim:
                    obs = self.torch.cat([obs, self.torch.zeros(len(agents), self.state_dim)], dim=1)
                module = self.modules[module_id]
                inputs = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
                # the distribution's deterministic action: the Gaussian mean, or the top-k picks (Plackett-Luce)
                dist = module.get_inference_action_dist_cls().from_logits(inputs)
                action = dist.sample() if self.explore else dist.to_deterministic().sample()
                action = action.numpy()
                # RLlib's normalize_actions: the module acts in [-1, 1], the env gets [low, high]
                scaled = np.clip(low + (action + 1.0) * 0.5 * (high - low), low, high).astype(np.float32)
                actions.update(zip(agents, scaled))
        return actions


class SB3CheckpointPolicy(_CheckpointPolicy):
    """A policy from an SB3 checkpoint (``model.zip`` or the folder holding it)."""

    def __init__(self, env, path: str | Path, explore: bool = False) -> None:
        from stable_baselines3 import PPO

        from .sb3_train import _load_model_file

        super().__init__(explore)
        self.path = Path(path)
        self.name = f"{'sb3-sample' if explore else 'sb3'}:{self.path}"
        self.model = PPO.load(str(_load_model_file(self.path)), device="cpu")
        _check_space(env, self.model.observation_space.shape, self.path)

    def act(self, observations: dict, infos: dict) -> dict:
        agents = list(observations)
        batch = np.stack([observations[a] for a in agents])
        with self._sampling():
            actions, _ = self.model.predict(batch, deterministic=not self.explore)
        return dict(zip(agents, np.asarray(actions, dtype=np.float32)))


def load_checkpoint_policy(spec: str, env):
    """``rllib:PATH`` / ``sb3:PATH`` (deterministic), ``rllib-sample:PATH`` / ``sb3-sample:PATH`` (sampled,
    seeded by ``reset``) -> a policy. The kinds are registered in ``datagames_env.policy.CHECKPOINT_KINDS``;
    this is ``make_policy`` restricted to them."""
    from datagames_env.policy import CHECKPOINT_KINDS, is_checkpoint_spec, make_policy

    if not is_checkpoint_spec(spec) or not spec.partition(":")[2]:
        raise ValueError(f"policy '{spec}': expected one of {', '.join(k + ':PATH' for k in CHECKPOINT_KINDS)}")
    return make_policy(spec, env)
