"""``torchrl_env(num_envs, config)``: a native TorchRL ``EnvBase`` over any scenario's batched env, VMAS style.

``datagames_env.torchrl_env(num_envs=256, config="default", device="cpu", **overrides)`` (imported lazily: a
plain ``import datagames_env`` never imports torchrl). Every scenario: the cloud game, ``p2p`` and ``dual`` (the
config's ``scenario`` key); it steps :func:`~datagames_env.faces.vector.vector_env`, so a scenario's native
batched implementation makes B environments one array step.

=====================  =====================================================================================
Batch                  ``batch_size = (num_envs,)``; env b equals ``vector_env(num_envs).reset(seed)``'s env b
                       (``set_seed(s)`` then reset: env b gets seed ``s + b``), draw for draw
Agents                 one group ``"robots"`` = ``robot_0 … robot_{N-1}`` (``group_map``), all act every round
Observation            ``("robots", "observation")``: ``(B, N, obs_dim)`` float32 within the scenario's bounds,
                       the layout of ``parallel_env`` (``obs_layout``); ``"state"``: ``(B, state_dim)`` the
                       scenario's global state ``parallel_env.state()`` (cloud game: ``3C + 1 + 3NC``, privileged:
                       true mixes), for centralised critics; cloud game only: ``"distance"`` ``(B, 1)`` the
                       cloud's distance to the target (for logging)
Action                 ``("robots", "action")``: ``(B, N, A)`` in [0, 1]: the scenario's per-robot action
                       (cloud game: shares or scores; p2p, dual: a score per observed sample); with
                       ``action="gap-fraction"`` (cloud game, allocation mode) ``(B, N, 1)``: one fraction f per
                       robot, which the env maps to Greedy's shares towards ``cloud + f (target - cloud)``
Reward                 ``("robots", "reward")``: ``(B, N, 1)``, the scenario's reward
Episode end            after ``rounds`` steps: ``done = terminated = True`` at the root ``(B, 1)`` and per robot
                       ``("robots", "done" | "terminated")`` ``(B, N, 1)``; ``truncated`` is always False (the
                       rounds are the task's horizon and the observation carries ``rounds_left``: GUIDE 5)
Reset                  ``_reset`` mask ``(B, 1)`` honoured: only the masked envs start a new episode, the others
                       go on where they were (see below)
Arguments              ``num_envs``, ``config`` (name, path, dict or a scenario's config object), ``device``
                       (where tensors live; the scenario runs on CPU arrays), ``seed`` (as ``set_seed``),
                       ``action`` (``"env"``: the scenario's action, default; ``"gap-fraction"``), ``**overrides``
=====================  =====================================================================================

Partial resets. A batched scenario steps its B environments in lockstep (one round counter). A ``_reset`` mask
that covers some environments only moves them to a new *cohort*: a vector env of their own, reset with fresh
seeds, stepped beside the old one; the old cohort keeps stepping its remaining rows (the departed rows are fed
zero actions and ignored). A full reset (no mask, or all True) is one cohort again; vector envs of cohorts that
ended are kept and reused by later cohorts of their size (building a p2p or dual env trains models). Collectors
reset all envs at once here (every env ends after ``rounds`` steps), so the usual path is one cohort and one
batched step per step. An env whose episode ended and was not reset stays done (reward 0, observation unchanged)
until it is reset.

Seeds follow ``vector_env``: ``set_seed(s)`` makes the next full reset give env b seed ``s + b`` and seeds a
generator from ``s`` that draws the seeds of every later reset (``vector_env.reset(seed=s)`` then
``reset()``), so a whole run of episodes equals ``vector_env``'s; a partial reset draws its envs' seeds from
that generator.

The gap-fraction action (``action="gap-fraction"``) is the action of RLlib's ``--model gap-fraction``: robot i
with fraction ``f_i`` runs Greedy's solver towards ``cloud + f_i (target - cloud)`` from its own estimated
feasible matrix and availability (``baselines.fraction.greedy_fraction_shares``, loaded by entry point when the
env is built, as policies are: this package never imports ``baselines`` at import time). f = 1 is Greedy's
action, f = 0 uploads nothing. A learner then outputs one number per robot instead of C shares.
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from ..policy import load_entry_point
from ..scenarios import SCENARIOS, load_scenario_config, scenario_of
from .vector import VectorEnv


GROUP = "robots"
# actions a learner may emit instead of the scenario's own (``action=``): name -> entry point of the map
ACTIONS = {"env": None, "gap-fraction": "baselines.fraction:greedy_fraction_shares"}

__all__ = ["ACTIONS", "GROUP", "DataGamesTorchRLEnv", "FleetTorchRLEnv", "global_state", "torchrl_env"]


def global_state(venv, observations: np.ndarray | None = None) -> np.ndarray:
    """``(B, state_dim)`` float32: ``parallel_env.state()`` of every env of a vector env (its ``state()``; the
    observations argument is kept for callers of the cloud-game-only version and not needed)."""
    return venv.state()


class _Cohort:
    """Envs stepped together by one vector env: ``rows[k]`` is the env index (in the TorchRL batch) of the vector
    env's row k, or -1 when that env has moved to another cohort."""

    def __init__(self, venv, rows: np.ndarray) -> None:
        self.venv = venv
        self.rows = np.asarray(rows, dtype=np.int64)
        self.ended = False
        self.infos: dict = {}  # the vector env's last infos (the gap-fraction map reads counts and availability)

    @property
    def identity(self) -> bool:
        return bool(len(self.rows) and (self.rows == np.arange(len(self.rows))).all())


class FleetTorchRLEnv(EnvBase):
    """Any scenario as a batched multi-agent TorchRL environment (module docstring)."""

    batch_locked = True

    def __init__(self, num_envs: int = 1, config=None, device="cpu", seed: int | None = None, action: str = "env",
                 **overrides) -> None:
        cfg = load_scenario_config(config, **overrides)
        if action not in ACTIONS:
            raise ValueError(f"torchrl_env: action '{action}' is not one of {sorted(ACTIONS)}")
        if action == "gap-fraction" and (scenario_of(cfg) != "datagames" or cfg.action_mode != "allocation"):
            raise ValueError(f"torchrl_env: action 'gap-fraction' needs the cloud game in allocation mode (scenario "
                             f"'{scenario_of(cfg)}', action_mode '{getattr(cfg, 'action_mode', None)}')")
        main = VectorEnv(num_envs, cfg)  # checks num_envs and the config before torchrl sees anything
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.config = cfg
        self.scenario = main.scenario
        self.num_envs = num_envs
        self._main = main
        self._spare: dict[int, list[VectorEnv]] = {}  # vector envs of ended cohorts, by size
        self.n_robots = main.n_robots
        self.agent_names = list(main.possible_agents)
        self.group_map = {GROUP: list(self.agent_names)}
        self.obs_layout = main.obs_layout
        self.n_classes = getattr(main.batched, "n_classes", None)  # the cloud game's C (None where not exposed)
        obs_space = main.single_observation_space
        self.obs_dim = obs_space.shape[0]
        self.action = action
        self._action_map = None if ACTIONS[action] is None else load_entry_point(ACTIONS[action])
        self.env_action_dim = main.single_action_space.shape[0]  # what the scenario steps
        self.action_dim = 1 if self._action_map is not None else self.env_action_dim  # what the learner emits
        if main.state_dim is None:  # a looped batch learns its state's width at its first reset
            main.reset(seed=0)
        self.state_dim = int(main.state_dim)
        self._state_bounds = SCENARIOS[self.scenario].state_bounds  # its table row's (None: unbounded)
        self._has_distance = "distance" in main.batched.env_info_keys
        b_n, n = num_envs, self.n_robots
        self._obs = np.zeros((b_n, n, self.obs_dim), dtype=np.float32)
        self._state = np.zeros((b_n, self.state_dim), dtype=np.float32)
        self._distance = np.zeros(b_n, dtype=np.float32)
        self._done = np.zeros(b_n, dtype=bool)
        self._cohorts: list[_Cohort] = []
        self._pending_seed: int | None = None
        self._seed_rng = np.random.default_rng()
        self._make_specs(obs_space)
        if seed is not None:
            self.set_seed(seed)

    # ------------------------------------------------------------------------------------------------- specs
    def _make_specs(self, obs_space) -> None:
        b_n, n, dev = self.num_envs, self.n_robots, self.device
        low = torch.as_tensor(obs_space.low, dtype=torch.float32).expand(b_n, n, self.obs_dim).clone()
        high = torch.as_tensor(obs_space.high, dtype=torch.float32).expand(b_n, n, self.obs_dim).clone()
        self.full_observation_spec = Composite(
            {GROUP: Composite({"observation": Bounded(low, high, (b_n, n, self.obs_dim), dev, torch.float32)},
                              shape=(b_n, n), device=dev),
             "state": (Bounded(*self._state_bounds, (b_n, self.state_dim), dev, torch.float32)
                       if self._state_bounds else Unbounded((b_n, self.state_dim), dev, torch.float32)),
             **({"distance": Unbounded((b_n, 1), dev, torch.float32)} if self._has_distance else {})},
            shape=(b_n,), device=dev)
        self.full_action_spec = Composite(
            {GROUP: Composite({"action": Bounded(0.0, 1.0, (b_n, n, self.action_dim), dev, torch.float32)},
                              shape=(b_n, n), device=dev)},
            shape=(b_n,), device=dev)
        self.full_reward_spec = Composite(
            {GROUP: Composite({"reward": Unbounded((b_n, n, 1), dev, torch.float32)}, shape=(b_n, n), device=dev)},
            shape=(b_n,), device=dev)

        def flags(shape):
            return {key: Categorical(2, shape, dev, torch.bool) for key in ("done", "terminated", "truncated")}

        self.full_done_spec = Composite(
            {**flags((b_n, 1)), GROUP: Composite(flags((b_n, n, 1)), shape=(b_n, n), device=dev)},
            shape=(b_n,), device=dev)

    # ------------------------------------------------------------------------------------------------- seeds
    def _set_seed(self, seed: int | None) -> None:
        self._pending_seed = None if seed is None else int(seed)

    def _seeds(self, envs: np.ndarray) -> list[int]:
        """Episode seeds for ``envs`` (sorted env indices), as ``vector_env.reset`` draws them."""
        if self._pending_seed is not None:
            seed, self._pending_seed = self._pending_seed, None
            self._seed_rng = np.random.default_rng(seed)
            return [seed + int(b) for b in envs]
        return [int(s) for s in self._seed_rng.integers(2**62, size=len(envs))]

    # ------------------------------------------------------------------------------------------------- reset
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None
        if tensordict is not None:
            if "_reset" in tensordict.keys():
                mask = tensordict.get("_reset").reshape(self.num_envs).cpu().numpy()
            elif (GROUP, "_reset") in tensordict.keys(True):
                mask = tensordict.get((GROUP, "_reset")).reshape(self.num_envs, -1).any(-1).cpu().numpy()
        if mask is None or mask.all() or not self._cohorts:
            envs = np.arange(self.num_envs)
            for cohort in self._cohorts:
                self._retire(cohort)
            obs, infos = self._main.reset(seed=self._seeds(envs))
            self._cohorts = [_Cohort(self._main, envs)]
            self._read(self._cohorts[0], obs, infos, envs=envs)
        elif mask.any():
            envs = np.flatnonzero(mask)
            for cohort in self._cohorts:
                cohort.rows[np.isin(cohort.rows, envs)] = -1
                if not (cohort.rows >= 0).any():
                    self._retire(cohort)
            self._cohorts = [c for c in self._cohorts if (c.rows >= 0).any()]
            spare = self._spare.get(len(envs))
            venv = spare.pop() if spare else VectorEnv(len(envs), self.config)
            obs, infos = venv.reset(seed=self._seeds(envs))
            cohort = _Cohort(venv, envs)
            self._cohorts.append(cohort)
            self._read(cohort, obs, infos, envs=envs)
        return self._output(reward=None)

    # -------------------------------------------------------------------------------------------------- step
    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        actions = tensordict.get((GROUP, "action")).detach().to("cpu", torch.float64).numpy()
        reward = np.zeros((self.num_envs, self.n_robots), dtype=np.float32)
        for cohort in self._cohorts:
            if cohort.ended:  # not reset yet: stays done, reward 0
                continue
            if cohort.identity:
                rows_actions = actions
            else:
                live = cohort.rows >= 0
                rows_actions = np.zeros((len(cohort.rows),) + actions.shape[1:])
                rows_actions[live] = actions[cohort.rows[live]]
            if self._action_map is not None:
                rows_actions = self._fraction_shares(cohort, rows_actions)
            obs, rew, term, _trunc, infos = cohort.venv.step(rows_actions)
            cohort.ended = bool(term.all())
            self._read(cohort, obs, infos, reward=reward, rewards=rew, done=cohort.ended)
        return self._output(reward=reward)

    # ----------------------------------------------------------------------------------------------- helpers
    def _fraction_shares(self, cohort: _Cohort, fractions: np.ndarray) -> np.ndarray:
        """``(rows, N, 1)`` fractions -> ``(rows, N, C)`` shares: each robot's Greedy towards its fraction of the gap
        (module docstring), from the cohort's estimated feasible matrices and last infos."""
        venv, infos = cohort.venv, cohort.infos
        return self._action_map(venv.batched.estimated_feasible_matrices(), infos["cloud_counts"],
                                venv.batched.core.target_counts, np.clip(fractions[..., 0], 0.0, 1.0),
                                venv.config.n_cache, infos["available"], venv.config.loss)

    def _retire(self, cohort: _Cohort) -> None:
        """Keep the vector env of a cohort that no longer owns a row, for a later cohort of its size."""
        if cohort.venv is not self._main:
            self._spare.setdefault(cohort.venv.num_envs, []).append(cohort.venv)

    def _read(self, cohort: _Cohort, obs: np.ndarray, infos: dict, envs=None, reward=None, rewards=None,
              done=False) -> None:
        """Copy a cohort's arrays into the batch-wide ones, at the rows it still owns."""
        if envs is None:
            live = cohort.rows >= 0
            rows, envs = np.flatnonzero(live), cohort.rows[live]
        else:
            rows = np.arange(len(envs))
            cohort.ended = False
        full = len(rows) == len(cohort.rows)
        cohort.infos = infos
        state = cohort.venv.state()
        pick = (lambda a: a) if full else (lambda a: a[rows])
        self._obs[envs] = pick(obs)
        self._state[envs] = pick(state)
        if self._has_distance:
            self._distance[envs] = pick(infos["distance"])
        self._done[envs] = done
        if reward is not None:
            reward[envs] = pick(rewards)

    def _output(self, reward: np.ndarray | None) -> TensorDictBase:
        b_n, n, dev = self.num_envs, self.n_robots, self.device
        done = torch.from_numpy(self._done.copy()).reshape(b_n, 1)
        flags = {"done": done, "terminated": done.clone(), "truncated": torch.zeros_like(done)}
        group = {key: value.unsqueeze(1).expand(b_n, n, 1).clone() for key, value in flags.items()}
        group["observation"] = torch.from_numpy(self._obs.copy())
        if reward is not None:
            group["reward"] = torch.from_numpy(reward).unsqueeze(-1)
        out = {GROUP: TensorDict(group, batch_size=(b_n, n)), **flags,
               "state": torch.from_numpy(self._state.copy())}
        if self._has_distance:
            out["distance"] = torch.from_numpy(self._distance.copy()).reshape(b_n, 1)
        return TensorDict(out, batch_size=(b_n,)).to(dev)

    # ------------------------------------------------------------------------------------------- read-outs
    @property
    def cohorts(self) -> int:
        """How many vector envs step this batch (1 unless a partial reset split it)."""
        return len(self._cohorts)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(scenario={self.scenario!r}, num_envs={self.num_envs}, "
                f"n_robots={self.n_robots}, action={self.action!r}, action_dim={self.action_dim}, "
                f"device={self.device})")


# the name of the cloud game's TorchRL env before every scenario had one
DataGamesTorchRLEnv = FleetTorchRLEnv


def torchrl_env(num_envs: int = 1, config=None, device="cpu", seed: int | None = None, action: str = "env",
                **overrides) -> FleetTorchRLEnv:
    """``datagames_env.torchrl_env(num_envs=256, config="p2p_default")``: any scenario's batched env as a TorchRL
    ``EnvBase`` (module table)."""
    return FleetTorchRLEnv(num_envs, config, device=device, seed=seed, action=action, **overrides)
