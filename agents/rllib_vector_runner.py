"""RLlib at the environment's speed: an env runner that steps ``vector_env`` in bulk and a learner that takes arrays.

RLlib's own ``MultiAgentEnvRunner`` steps one ``MultiAgentEnv`` per sub-env and builds every episode robot by robot
through the env-to-module and module-to-env connector pipelines; the learner pipeline then walks those episodes
again, one robot-episode at a time, adds an artificial bootstrap step to each and runs GAE. Measured on `default`
that is about 0.3 ms per agent step of sampling alone, against about 2 us for the batched core.

=====================  ============================================================================
Env runner             :class:`VectorEnvRunner` (``config.env_runners(env_runner_cls=...)``): one
                       ``datagames_env.vector_env(B)`` with B = ``num_envs_per_env_runner``; per round one
                       forward pass of each module over all its rows (B envs x its robots), actions
                       sampled from the module's own distribution class (as RLlib's ``GetActions``) and
                       mapped to the action box as ``normalize_actions`` / ``clip_actions`` say
sample()               whole episodes of all B envs (every env ends after ``rounds`` steps), as many as
                       ``rollout_fragment_length * B`` agent steps ask for (at least one); returns one
                       :class:`RobotEpisodes` per env: arrays, not ``MultiAgentEpisode`` objects
Seeding                the first reset gives env b the seed
                       ``TRAIN_FIRST_SEED + (config.seed + worker_index) * B + b`` (far from the
                       evaluation seeds 0-999); every later episode is a fresh draw from the vector
                       env's seeded generator
Learner                :class:`VectorPPOTorchLearner` (``MaskedPPOTorchLearner`` + this connector):
                       :class:`ArrayLearnerConnector` turns ``RobotEpisodes`` into the train batch
                       with one value pass and a GAE vectorised over rows (a loop over the T rounds
                       only); every row is a real step, so the advantages are standardised over real
                       rows without the bootstrap-row trap (ray issue 57989). Episodes of RLlib's own
                       runners still go through RLlib's pipeline, so both runners share one learner
Module, loss           unchanged: the run's ``RLModuleSpec`` (``agents.modules``) and PPO's loss;
                       checkpoints hold the same module and connector states as RLlib's runner
Scenarios              every one (``datagames``, ``p2p``, ``dual``): ``vector_env`` of the config, native
                       batched where the scenario has it (p2p / dual: the fast perception tier), else
                       ``LoopedBatch`` (correct, as slow as B single envs); the module is the run's spec
                       (p2p / dual: ``SampleScoringModule`` with Plackett-Luce top-k picks, as RLlib's runner)
Structured actions     a module with ``env_action`` (``--model gap-fraction``: one fraction per robot)
                       acts in its own action space; the runner maps its actions to the env's
                       (:func:`greedy_fraction_actions`: Greedy towards that fraction of the gap) and
                       stores the module's actions for the learner
Not supported          ``--critic central`` (global state), ``--message-sweeps`` and ``faults.dropout``
                       (the vector env has none of them): a clear error
=====================  ============================================================================

``use_vector_runner(config)`` switches a ``PPOConfig`` to this pair; ``agents.rllib_train`` does it for
``TrainSettings(vector_runner=True)``. Several learners get whole envs each: the number of envs per update must
then be a multiple of ``num_learners`` (RLlib shards episodes by length and would otherwise cut one).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.metrics import (
    ENV_STEP_TIMER,
    NUM_AGENT_STEPS_SAMPLED,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
    NUM_MODULE_STEPS_SAMPLED,
    NUM_MODULE_STEPS_SAMPLED_LIFETIME,
    RLMODULE_INFERENCE_TIMER,
    SAMPLE_TIMER,
    WEIGHTS_SEQ_NO,
)

from .ppo_learner import MaskedPPOTorchLearner, masked_standardize

# training episodes never start from evaluation seeds (0-999); the imitation experts use 1,000,000 on
TRAIN_FIRST_SEED = 2_000_000
_VALUE_CHUNK = 16384  # rows per value forward pass in the learner (bounded memory at large batches)


class RobotEpisodes:
    """The robots of one environment over whole episode(s) of ``T`` rounds, as arrays (row r = one robot).

    ``obs`` (R, T+1, D) with the observation after the last step, ``actions`` (R, T, A) as the module sampled
    them (before the map to the action box), ``logp`` (R, T), ``dist_inputs`` (R, T, K), ``rewards`` (R, T),
    ``terminateds`` (R, T); ``module_ids`` (R,) which module acted for the row, ``agent_ids`` (R,) its robot.
    ``len()`` is in env steps (T, as RLlib's multi-agent episodes count), ``agent_steps()`` is R * T.
    """

    def __init__(self, obs, actions, logp, dist_inputs, rewards, terminateds, module_ids, agent_ids) -> None:
        self.obs, self.actions, self.logp, self.dist_inputs = obs, actions, logp, dist_inputs
        self.rewards, self.terminateds = rewards, terminateds
        self.module_ids, self.agent_ids = module_ids, agent_ids

    def __len__(self) -> int:
        return self.rewards.shape[1]

    def env_steps(self) -> int:
        return len(self)

    def agent_steps(self) -> int:
        return int(self.rewards.size)

    def get_return(self) -> float:
        """Summed over robots and rounds (as ``MultiAgentEpisode.get_return``)."""
        return float(self.rewards.sum())

    def __getitem__(self, item):
        raise ValueError("RobotEpisodes cannot be cut: RLlib cut one to share an update among learners; make the "
                         "number of environments per update (train_batch_size / (robots x rounds)) a multiple of "
                         "num_learners")

    def slice(self, *args, **kwargs):
        return self[args[0] if args else None]


def vectorised_gae(rewards: torch.Tensor, values: torch.Tensor, terminateds: torch.Tensor, gamma: float,
                   lambda_: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over rows at once: ``rewards`` and ``terminateds`` (R, T), ``values`` (R, T+1) where column T is the value
    of the observation after the last step (the bootstrap where a row is cut, ignored where it terminated).
    Returns raw advantages and value targets (R, T)."""
    not_done = 1.0 - terminateds.to(values.dtype)
    deltas = rewards + gamma * values[:, 1:] * not_done - values[:, :-1]
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[:, 0])
    for t in range(deltas.shape[1] - 1, -1, -1):
        running = deltas[:, t] + gamma * lambda_ * not_done[:, t] * running
        advantages[:, t] = running
    return advantages, advantages + values[:, :-1]


class ArrayLearnerConnector(ConnectorV2):
    """Learner pipeline for :class:`RobotEpisodes`: the train batch straight from the arrays, with values from one
    no-grad pass and vectorised GAE; any other episodes go to RLlib's pipeline (``fallback``)."""

    def __init__(self, fallback, *, gamma: float, lambda_: float) -> None:
        super().__init__(getattr(fallback, "input_observation_space", None),
                         getattr(fallback, "input_action_space", None))
        self.fallback, self.gamma, self.lambda_ = fallback, gamma, lambda_

    def __call__(self, *, rl_module, batch, episodes, **kwargs):
        ours = [isinstance(e, RobotEpisodes) for e in episodes]
        if not any(ours):
            return self.fallback(rl_module=rl_module, batch=batch, episodes=episodes, **kwargs)
        if not all(ours):
            raise ValueError("learner got RobotEpisodes mixed with RLlib episodes: one update takes one kind")
        # every env of an update has the same rounds; rows of all envs stacked
        obs = np.concatenate([e.obs for e in episodes])
        module_ids = np.concatenate([e.module_ids for e in episodes])
        columns = {name: np.concatenate([getattr(e, attr) for e in episodes]) for name, attr in
                   ((Columns.ACTIONS, "actions"), (Columns.ACTION_LOGP, "logp"),
                    (Columns.ACTION_DIST_INPUTS, "dist_inputs"), (Columns.REWARDS, "rewards"),
                    (Columns.TERMINATEDS, "terminateds"))}
        batch = dict(batch or {})
        for module_id in np.unique(module_ids):
            module_id = str(module_id)
            if module_id not in rl_module:
                raise ValueError(f"RobotEpisodes name module '{module_id}', which this learner does not have")
            module = rl_module[module_id].unwrapped()
            rows = np.flatnonzero(module_ids == module_id)
            batch[module_id] = self._module_batch(module, obs[rows], {k: v[rows] for k, v in columns.items()})
        return batch

    def _module_batch(self, module, obs: np.ndarray, columns: dict) -> dict:
        device = next(module.parameters()).device
        r, steps = columns[Columns.REWARDS].shape
        obs_t = torch.from_numpy(obs).to(device)
        flat_obs = obs_t.reshape(r * (steps + 1), -1)
        with torch.no_grad():
            values = torch.cat([module.compute_values({Columns.OBS: flat_obs[i:i + _VALUE_CHUNK]})
                                for i in range(0, flat_obs.shape[0], _VALUE_CHUNK)]).reshape(r, steps + 1)
        rewards = torch.from_numpy(columns[Columns.REWARDS]).to(device=device, dtype=values.dtype)
        terminateds = torch.from_numpy(columns[Columns.TERMINATEDS]).to(device)
        advantages, targets = vectorised_gae(rewards, values, terminateds, self.gamma, self.lambda_)
        advantages = advantages.reshape(-1)
        # every row is a real step (no artificial bootstrap rows): standardise over all of them
        advantages = masked_standardize(advantages, torch.ones_like(advantages, dtype=torch.bool))

        def flat(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array.reshape(r * steps, *array.shape[2:]))).to(device)

        return {Columns.OBS: obs_t[:, :steps].reshape(r * steps, -1), Columns.ACTIONS: flat(columns[Columns.ACTIONS]),
                Columns.ACTION_LOGP: flat(columns[Columns.ACTION_LOGP]),
                Columns.ACTION_DIST_INPUTS: flat(columns[Columns.ACTION_DIST_INPUTS]),
                Columns.REWARDS: flat(columns[Columns.REWARDS]),
                Postprocessing.ADVANTAGES: advantages, Postprocessing.VALUE_TARGETS: targets.reshape(-1)}


class VectorPPOTorchLearner(MaskedPPOTorchLearner):
    """``MaskedPPOTorchLearner`` whose learner pipeline takes :class:`RobotEpisodes` as arrays (see the module
    docstring); RLlib episodes still take RLlib's pipeline with the masked GAE."""

    def build(self) -> None:
        super().build()
        if self._learner_connector is not None and not isinstance(self._learner_connector, ArrayLearnerConnector):
            self._learner_connector = ArrayLearnerConnector(self._learner_connector, gamma=self.config.gamma,
                                                            lambda_=self.config.lambda_)


class _VectorEnvSpaces:
    """What RLlib's runner machinery reads of an env (spaces, ``unwrapped``, ``close``), over the vector env."""

    def __init__(self, vector) -> None:
        self.vector = vector
        self.num_envs = vector.num_envs
        agents = vector.possible_agents
        self.possible_agents = list(agents)
        self.observation_space = gym.spaces.Dict({a: vector.single_observation_space for a in agents})
        self.action_space = gym.spaces.Dict({a: vector.single_action_space for a in agents})
        self.single_observation_space, self.single_action_space = self.observation_space, self.action_space

    @property
    def unwrapped(self):
        return self

    def get_observation_space(self, agent_id):
        return self.observation_space[agent_id]

    def get_action_space(self, agent_id):
        return self.action_space[agent_id]

    def close(self) -> None:
        self.vector.close()


def vector_env_of(env_config: dict, num_envs: int):
    """The ``vector_env`` of an RLlib ``env_config`` (keys of :mod:`datagames_env.faces.rllib`), any scenario; a clear
    error for what the vector env does not have."""
    from datagames_env import vector_env

    env_config = dict(env_config or {})
    if env_config.get("global_state"):
        raise ValueError("vector runner: env_config global_state=True (--critic central) is not supported; train "
                         "with --critic local or without the vector runner")
    if env_config.get("message_sweeps"):
        raise ValueError("vector runner: env_config message_sweeps (--message-sweeps) is not supported; train "
                         "without the vector runner")
    unknown = set(env_config) - {"config", "overrides", "global_state", "message_sweeps", "info_keys", "render_mode"}
    if unknown:
        raise ValueError(f"vector runner: unknown env_config keys {sorted(unknown)}")
    config, overrides = env_config.get("config"), dict(env_config.get("overrides") or {})
    if num_envs < 1:
        raise ValueError(f"vector runner: num_envs_per_env_runner must be >= 1, got {num_envs}")
    return vector_env(num_envs, config, **overrides)


class VectorEnvRunner(MultiAgentEnvRunner):
    """See the module docstring. Keeps ``MultiAgentEnvRunner``'s module, connector states, weight sync, metrics
    and checkpoints; replaces the env (``vector_env``) and ``sample()``."""

    def make_env(self) -> None:
        if self.env is not None:
            self.env.close()
        self.vector = vector_env_of(self.config.env_config, self.config.num_envs_per_env_runner)
        self.env = _VectorEnvSpaces(self.vector)
        self.num_envs = self.vector.num_envs
        self._needs_initial_reset = True

    def _module_rows(self) -> dict[str, np.ndarray]:
        """Robot indices per module id (the policy mapping of the config)."""
        rows = defaultdict(list)
        for i, agent in enumerate(self.vector.possible_agents):
            rows[str(self.config.policy_mapping_fn(agent, None))].append(i)
        return {m: np.asarray(r) for m, r in rows.items()}

    def sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None, explore: bool | None = None,
               random_actions: bool = False, force_reset: bool = False) -> list[RobotEpisodes]:
        if self.env is None:
            raise ValueError(f"{self} has no env (a local runner beside remote ones): sample() on a remote runner")
        if random_actions:
            raise ValueError("VectorEnvRunner.sample(random_actions=True) is not supported (PPO never asks for it)")
        explore = self.config.explore if explore is None else explore
        b, n, rounds = self.num_envs, self.vector.n_robots, self.vector.config.rounds
        if num_episodes is not None:
            vector_episodes = max(1, math.ceil(num_episodes / b))
        else:
            if num_timesteps is None:
                num_timesteps = self.config.get_rollout_fragment_length(self.worker_index) * b
            per_episode = b * n * rounds if self.config.count_steps_by == "agent_steps" else b * rounds
            vector_episodes = max(1, math.ceil(num_timesteps / per_episode))
        self.metrics.log_value(WEIGHTS_SEQ_NO, self._weights_seq_no, window=1)
        with self.metrics.log_time(SAMPLE_TIMER):
            out = []
            for _ in range(vector_episodes):
                out.extend(self._sample_episode(explore))
        return out

    def _sample_episode(self, explore: bool) -> list[RobotEpisodes]:
        vector, b, n = self.vector, self.num_envs, self.vector.n_robots
        rounds = vector.config.rounds
        if self._needs_initial_reset and self._seed is not None:
            observations, infos = vector.reset(seed=TRAIN_FIRST_SEED + int(self._seed) * b)
        else:
            observations, infos = vector.reset(seed=None)  # a fresh draw from the vector env's seeded generator
        self._needs_initial_reset = False
        started = time.perf_counter()
        space, env_action = self._module_action()
        obs_dim, act_dim = observations.shape[-1], space.shape[0]
        obs = np.empty((rounds + 1, b, n, obs_dim), np.float32)
        actions = np.empty((rounds, b, n, act_dim), np.float32)
        logp = np.empty((rounds, b, n), np.float32)
        rewards = np.empty((rounds, b, n), np.float32)
        terminateds = np.empty((rounds, b, n), bool)
        dist_inputs: np.ndarray | None = None
        module_rows = self._module_rows()
        for t in range(rounds):
            obs[t] = observations
            with self.metrics.log_time(RLMODULE_INFERENCE_TIMER), torch.no_grad():
                for module_id, rows in module_rows.items():
                    a, lp, inputs = self._act(module_id, observations[:, rows].reshape(b * len(rows), obs_dim), explore)
                    if dist_inputs is None:
                        dist_inputs = np.empty((rounds, b, n, inputs.shape[-1]), np.float32)
                    actions[t][:, rows] = a.reshape(b, len(rows), act_dim)
                    logp[t][:, rows] = lp.reshape(b, len(rows))
                    dist_inputs[t][:, rows] = inputs.reshape(b, len(rows), -1)
            with self.metrics.log_time(ENV_STEP_TIMER):
                env_actions = self._to_env(actions[t], space)
                if env_action is not None:  # a structured action (gap-fraction): the module's f -> Greedy's shares
                    env_actions = env_action(vector, env_actions, infos)
                observations, rewards[t], terminateds[t], truncations, infos = vector.step(env_actions)
            if truncations.any() or (terminateds[t].any() and t < rounds - 1):
                raise RuntimeError(f"vector env ended an episode at round {t + 1} of {rounds}: the vector runner needs "
                                   "every env to run exactly `rounds` steps")
        obs[rounds] = observations
        if not terminateds[-1].all():
            raise RuntimeError(f"vector env did not terminate after rounds={rounds} steps")
        self._log_sampled(rewards, time.perf_counter() - started, module_rows)
        module_of_robot = np.empty(n, dtype=object)
        for module_id, rows in module_rows.items():
            module_of_robot[rows] = module_id
        agent_ids = np.asarray(vector.possible_agents, dtype=object)

        def rows_of(array: np.ndarray, env: int) -> np.ndarray:  # (T, B, N, ...) -> (N, T, ...) of one env
            return np.ascontiguousarray(np.swapaxes(array[:, env], 0, 1))

        return [RobotEpisodes(rows_of(obs, e), rows_of(actions, e), rows_of(logp, e), rows_of(dist_inputs, e),
                              rows_of(rewards, e), rows_of(terminateds, e), module_of_robot, agent_ids)
                for e in range(b)]

    def _module_action(self):
        """The modules' action space and the map from it to the env's action (None: the env's own box)."""
        modules = [self.module[m] for m in self._module_rows()]
        kinds = {getattr(m.unwrapped(), "env_action", None) for m in modules}
        if len(kinds) > 1:
            raise ValueError(f"vector runner: the modules map their actions differently ({sorted(map(str, kinds))})")
        kind = kinds.pop()
        if kind is None:
            return self.vector.single_action_space, None
        return modules[0].unwrapped().action_space, env_action_map(kind)

    def _act(self, module_id: str, obs: np.ndarray, explore: bool):
        """Actions, their log-probabilities and the distribution inputs for ``obs`` rows, as RLlib's
        ``GetActions`` connector computes them (sampled when exploring, the deterministic action otherwise)."""
        module = self.module[module_id]
        batch = {Columns.OBS: torch.from_numpy(obs).to(self._device)}
        out = module.forward_exploration(batch) if explore else module.forward_inference(batch)
        inputs = out[Columns.ACTION_DIST_INPUTS]
        if Columns.ACTIONS in out:
            actions = out[Columns.ACTIONS]
            logp = out.get(Columns.ACTION_LOGP)
        else:
            dist_cls = module.get_exploration_action_dist_cls() if explore else module.get_inference_action_dist_cls()
            dist = dist_cls.from_logits(inputs)
            if not explore:
                dist = dist.to_deterministic()
            actions = dist.sample()
            logp = dist.logp(actions)
        if logp is None:
            logp = torch.zeros(actions.shape[0])
        return actions.cpu().numpy(), logp.cpu().numpy(), inputs.cpu().numpy()

    def _to_env(self, actions: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
        """Module actions to the env's box, as RLlib's ``NormalizeAndClipActions`` does."""
        if self.config.normalize_actions:
            return np.clip(space.low + (actions + 1.0) * (space.high - space.low) / 2.0, space.low, space.high)
        if self.config.clip_actions:
            return np.clip(actions, space.low, space.high)
        return actions

    def _log_sampled(self, rewards: np.ndarray, seconds: float, module_rows: dict) -> None:
        """The counters and episode metrics that ``MultiAgentEnvRunner`` logs step by step, logged per batch."""
        rounds, b, n = rewards.shape
        env_steps = rounds * b
        self.num_env_steps_sampled_lifetime += env_steps
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED, env_steps, reduce="sum")
        self.metrics.log_value(NUM_ENV_STEPS_SAMPLED_LIFETIME, env_steps, reduce="lifetime_sum", with_throughput=True)
        self.metrics.log_value(NUM_EPISODES, b, reduce="sum")
        self.metrics.log_value(NUM_EPISODES_LIFETIME, b, reduce="lifetime_sum")
        for agent in self.vector.possible_agents:
            self.metrics.log_value((NUM_AGENT_STEPS_SAMPLED, agent), env_steps, reduce="sum")
            self.metrics.log_value((NUM_AGENT_STEPS_SAMPLED_LIFETIME, agent), env_steps, reduce="lifetime_sum")
        for module_id, rows in module_rows.items():
            self.metrics.log_value((NUM_MODULE_STEPS_SAMPLED, module_id), env_steps * len(rows), reduce="sum")
            self.metrics.log_value((NUM_MODULE_STEPS_SAMPLED_LIFETIME, module_id), env_steps * len(rows),
                                   reduce="lifetime_sum")
        # episode metrics: the smoothing window keeps only the last few episodes, so log only those
        window = max(1, math.ceil(self.config.metrics_num_episodes_for_smoothing / (self.config.num_env_runners or 1)))
        agent_returns = rewards.sum(axis=0)  # (B, N)
        for env in range(max(0, b - window), b):
            modules = defaultdict(float)
            for module_id, rows in module_rows.items():
                modules[module_id] += float(agent_returns[env, rows].sum())
            self._log_episode_metrics(rounds, float(agent_returns[env].sum()), seconds,
                                      {a: float(agent_returns[env, i]) for i, a in enumerate(self.vector.possible_agents)},
                                      dict(modules), {a: rounds for a in self.vector.possible_agents})

    def get_metrics(self):
        return self.metrics.reduce()


def greedy_fraction_actions(vector, fractions: np.ndarray, infos: dict) -> np.ndarray:
    """``(B, N, 1)`` fractions in [0, 1] -> ``(B, N, C)`` shares: each robot's Greedy towards ``cloud + f (target -
    cloud)`` from its own estimated feasible matrix and availability (``baselines.fraction``), as ``rllib:``
    evaluation computes them from the parallel env's infos."""
    from baselines.fraction import greedy_fraction_shares

    batched = vector.batched
    if not hasattr(batched, "estimated_feasible_matrices") or vector.config.action_mode != "allocation":
        raise ValueError("gap-fraction actions need the cloud game in allocation mode (estimated feasible matrices)")
    return greedy_fraction_shares(batched.estimated_feasible_matrices(), infos["cloud_counts"],
                                  batched.core.target_counts, fractions[..., 0], vector.config.n_cache,
                                  infos["available"], vector.config.loss).astype(np.float32)


def interactive_fraction_actions(sweeps: int):
    """The map of ``interactive-fraction:K`` (:class:`agents.modules.SweepFractionModule`): fractions -> the shares
    after the first announcements and K Gauss-Seidel sweeps (``datagames_env.faces.comm``)."""
    from datagames_env.faces.comm import interactive_fraction_shares

    def act(vector, fractions: np.ndarray, infos: dict) -> np.ndarray:
        batched = vector.batched
        if not hasattr(batched, "estimated_feasible_matrices") or vector.config.action_mode != "allocation":
            raise ValueError("sweep-fraction actions need the cloud game in allocation mode (estimated feasible matrices)")
        return interactive_fraction_shares(batched.estimated_feasible_matrices(), infos["cloud_counts"],
                                           batched.core.target_counts, fractions[..., 0], vector.config.n_cache,
                                           infos["available"], sweeps).astype(np.float32)

    return act


def greedy_share_actions():
    """The map of ``greedy-share`` (:class:`agents.share_module.GapShareModule`): floors -> ``greedy-share``'s
    shares (``baselines.fraction.ShareMap``, which remembers last round's public cloud)."""
    from baselines.fraction import ShareMap

    share_map = ShareMap()

    def act(vector, floors: np.ndarray, infos: dict) -> np.ndarray:
        batched = vector.batched
        if not hasattr(batched, "estimated_feasible_matrices") or vector.config.action_mode != "allocation" or \
                vector.config.loss != "l2":
            raise ValueError("gap-share actions need the cloud game in allocation mode with loss l2")
        return share_map(batched.estimated_feasible_matrices(), infos["cloud_counts"], batched.core.target_counts,
                         floors[..., 0], infos["uploaded_labels"], infos["round"], vector.config.n_cache,
                         infos["available"]).astype(np.float32)

    return act


def env_action_map(kind: str):
    """The map of a module's ``env_action`` (see :class:`agents.modules.GapFractionModule`)."""
    if kind.startswith("interactive-fraction:"):
        return interactive_fraction_actions(int(kind.partition(":")[2]))
    if kind == "greedy-share":
        return greedy_share_actions()
    if kind != "greedy-fraction":
        raise ValueError(f"unknown module env_action '{kind}' (known: greedy-fraction, greedy-share, "
                         "interactive-fraction:K)")
    return greedy_fraction_actions


def use_vector_runner(config):
    """``config`` (a ``PPOConfig``) sampling with :class:`VectorEnvRunner` and learning with
    :class:`VectorPPOTorchLearner`."""
    return config.env_runners(env_runner_cls=VectorEnvRunner).learners(learner_class=VectorPPOTorchLearner)
