"""The one PettingZoo parallel face of every scenario: :class:`FleetParallelEnv` over a
:class:`~datagames_env.scenarios.base.Scenario`.

=====================  ============================================================================
Agents                 ``robot_0 ... robot_{N-1}``; ``agents`` is every robot during an episode (less those that
                       left, below), empty after it
Spaces                 one ``Box`` object per agent, returned by every call (PettingZoo compares them):
                       the scenario's observation bounds, actions ``Box(0, 1, (A,), float32)``
Seeding                ``reset(seed)`` restarts a seed sequence, so later ``reset()`` calls without a seed are
                       reproducible too; a negative seed is an error
Actions                a dict with one array per active robot; a missing / unknown robot, something that is not a
                       numeric array, a wrong shape or NaN / inf raise ``ValueError`` naming the robot, before any
                       state changes
Robots leaving         a robot removed from ``agents`` during an episode (``env.agents.remove("robot_1")``) has
                       left until the next ``reset()``: it sends no action, gets no observation / reward /
                       termination / info entry, and acts with the neutral action (zeros) while the scenario is
                       told it is inactive: it uploads / shares / receives nothing (cloud game: no upload; dual:
                       no upload; p2p: no cache, no send, no receive, no retraining). Its stream still draws, so
                       the others' episode goes on draw for draw as if it were idle. Removing every robot ends
                       stepping (``step`` needs an active robot); a robot put back into ``agents`` acts again
                       from the next step; a name that is not a robot is an error
Faults                 the config's ``faults`` block (off by default). ``dropout`` / ``rejoin``: robots go
                       *offline* and come back, and ``agents`` stays the whole fleet (PettingZoo's API tests forbid
                       reviving an agent that terminated). After every step that is not the episode's last, each
                       robot draws once from the episode's fault generator: an online robot goes offline with
                       probability ``dropout``, an offline one comes back with probability ``rejoin``. Every info
                       then carries ``online`` (bool: whether the robot's next action counts; True at reset). An
                       offline robot stays in every dict (observation, the scenario's reward row, termination only
                       at the episode's end), and its action is ignored (it may be left out): the scenario is told
                       it is inactive, as for a robot that left. Every robot is online again at ``reset()``.
                       ``liars`` are drawn once per episode (``env.liars``, bool per robot); the scenario or the
                       policy's protocol uses them
Episode end            the scenario's last round terminates every robot (never a truncation); ``agents`` empties
Snapshots              ``snapshot()``: a small picklable :class:`~datagames_env.scenarios.base.Snapshot` (no
                       dataset, no model the config rebuilds); ``restore(snapshot)`` on an env of the same config
                       and data continues bit-exactly. Another scenario, config, data content or snapshot version,
                       or a field that does not fit (shape, range, robot name) is a ``SnapshotError`` naming it,
                       raised before anything changes. Snapshots are pickles: never load one from an untrusted source
Info arrays            every robot's info holds its own writable arrays (a shared or read-only array of the
                       scenario is copied), so writing into an info changes nothing else
Read-outs              ``obs_layout``, ``state()``, ``privileged_view()``; anything else the scenario offers
                       (``env.core``, ``env.ledger()``, ``env.cloud()``, ...) is reached through the face
=====================  ============================================================================

The scenarios' classes (``DataGamesParallelEnv``, ``P2PParallelEnv``, ``DualParallelEnv``) are this face with
their ``scenario_class`` set: constructors by name, no behaviour of their own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from ..scenarios.base import (SNAPSHOT_VERSION, Scenario, Snapshot, SnapshotError, check_snapshot_rng,
                              snapshot_entry)

__all__ = ["FleetParallelEnv"]


class FleetParallelEnv(ParallelEnv):
    """PettingZoo parallel env over one scenario (see the module docstring)."""

    scenario_class: type[Scenario] | None = None

    def __init__(self, config: Any = None, render_mode: str | None = None, max_cycles: int | None = None,
                 scenario: Scenario | None = None, **overrides: Any) -> None:
        if scenario is None:
            if self.scenario_class is None:
                raise TypeError("FleetParallelEnv needs a scenario object, or use a scenario's parallel_env()")
            if max_cycles is not None:  # PettingZoo's name for the episode length (max_cycles_test, registry)
                overrides["rounds"] = max_cycles
            scenario = self.scenario_class(config, **overrides)
        elif config is not None or overrides or max_cycles is not None:
            raise TypeError("pass either a scenario object or a config with overrides, not both")
        self.scenario = scenario
        self.metadata = scenario.metadata
        modes = self.metadata["render_modes"]
        if render_mode is not None and render_mode not in modes:
            raise ValueError(f"render_mode must be one of {modes} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.config = scenario.config
        self.possible_agents = [f"robot_{i}" for i in range(scenario.n_robots)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        low, high = scenario.observation_low, scenario.observation_high
        self.observation_spaces = {a: spaces.Box(low, high, dtype=np.float32) for a in self.possible_agents}
        self.action_spaces = {a: spaces.Box(0.0, 1.0, (scenario.action_width,), dtype=np.float32)
                              for a in self.possible_agents}
        if hasattr(scenario, "state_space"):
            self.state_space = scenario.state_space
        self._next_seed_rng = np.random.default_rng()
        self._offline: set[str] = set()  # robots offline as a fault (dropout); they stay in agents
        faults = scenario.faults
        self._reports_online = faults is not None and faults.dropout > 0  # infos carry "online"

    def __getattr__(self, name: str) -> Any:
        # scenario read-outs (env.core, env.ledger(), env.cloud(), ...); only called for names the face lacks
        if name == "scenario" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.scenario, name)

    # ------------------------------------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Box:
        return self.action_spaces[agent]

    @property
    def obs_layout(self) -> dict[str, slice]:
        return dict(self.scenario.obs_layout)

    # -------------------------------------------------------------------------------------------------- loop
    def reset(self, seed: int | None = None, options: dict | None = None):
        episode_seed = self._next_episode_seed(seed)
        observations, infos = self.scenario.reset(episode_seed)
        self.scenario.start_faults(episode_seed)
        self.agents = list(self.possible_agents)
        self._offline = set()
        if self.render_mode == "human":
            self.render()
        return self._per_agent(observations), self._own_infos(infos, self.agents)

    def step(self, actions: dict):
        matrix = self._action_matrix(actions)
        agents = list(self.agents)
        if not self._offline and agents == self.possible_agents:
            active = None  # every robot acts
        else:
            present = set(agents)  # membership tests on a set: O(N) per step, not O(N^2), at fleet sizes
            active = np.array([a in present and a not in self._offline for a in self.possible_agents])
        transition = self.scenario.step(matrix, None if active is None or active.all() else active)
        going, returning = self._fault_dropouts(transition.terminated, active)
        self._offline = (self._offline | set(going)) - set(returning)
        if agents == self.possible_agents:  # every robot present, in order: rows by position
            observations = dict(zip(agents, transition.observations))
            rewards = dict(zip(agents, np.asarray(transition.rewards, dtype=np.float64).tolist()))
        else:
            observations = {a: transition.observations[self._index[a]] for a in agents}
            rewards = {a: float(transition.rewards[self._index[a]]) for a in agents}
        infos = self._own_infos(transition.infos, agents)
        terminations = dict.fromkeys(agents, bool(transition.terminated))
        truncations = dict.fromkeys(agents, False)
        if transition.terminated:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos

    def _fault_dropouts(self, terminated: bool, active: np.ndarray | None) -> tuple[list[str], list[str]]:
        """Who goes offline and who comes back after this step (module docstring): one uniform draw per robot per
        round from the scenario's ``agents`` fault generator, so a robot's draws do not depend on the others."""
        faults = self.scenario.faults
        if terminated or faults is None or not faults.dropout:
            return [], []
        draws = self.scenario.fault_rngs["agents"].random(len(self.possible_agents))
        if active is None:
            active = np.ones(len(self.possible_agents), dtype=bool)
        going = [a for a, on, u in zip(self.possible_agents, active, draws) if on and u < faults.dropout]
        returning = [a for a, u in zip(self.possible_agents, draws) if a in self._offline and u < faults.rejoin]
        return going, returning

    def _per_agent(self, rows) -> dict[str, Any]:
        return {a: rows[self._index[a]] for a in self.agents}

    def _own_infos(self, rows: list[dict], agents: list[str]) -> dict[str, dict]:
        """Each robot's info as a fresh dict with arrays of its own: an array that is read-only or already handed
        to another robot is copied (TorchRL warns about read-only arrays; a write must not reach another robot)."""
        if not self._reports_online and getattr(self.scenario, "owns_info_arrays", False):
            return {a: rows[self._index[a]] for a in agents}  # fresh dicts of fresh, per-robot arrays already
        seen: set[int] = set()
        infos = {}
        for a in agents:
            info = dict(rows[self._index[a]])
            for key, value in info.items():
                if isinstance(value, np.ndarray):
                    if not value.flags.writeable or id(value) in seen:
                        info[key] = value = value.copy()
                    seen.add(id(value))
            if self._reports_online:
                info["online"] = a not in self._offline
            infos[a] = info
        return infos

    def _next_episode_seed(self, seed: int | None) -> int:
        """The seed of the episode ``reset(seed)`` starts: ``seed``, or the next of the sequence the last seeded
        reset started (a fresh random sequence before any)."""
        if seed is not None:
            self._next_seed_rng = np.random.default_rng(seed)
        else:
            seed = int(self._next_seed_rng.integers(2**62))
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        return int(seed)

    def _action_matrix(self, actions: dict) -> np.ndarray:
        """``(n_robots, action_width)`` float64, row i robot i's action; every check names the robot at fault."""
        if not self.agents:
            raise RuntimeError("step() called before reset() or after the episode ended: call reset()")
        fast = self._stacked_actions(actions)
        if fast is not None:
            return fast
        strangers = [a for a in self.agents if a not in self._index]
        if strangers:
            raise ValueError(f"agents holds unknown names {strangers}: robots may leave agents, not join it")
        if not isinstance(actions, dict):
            raise ValueError(f"actions must be a dict of one action per robot, got {type(actions).__name__}")
        present = set(self.agents)
        unknown = [a for a in actions if a not in self._index or a not in present]
        if unknown:
            raise ValueError(f"actions for unknown or inactive agents {unknown}; active agents are {self.agents}")
        missing = [a for a in self.agents if a not in actions and a not in self._offline]
        if missing:
            raise ValueError(f"missing actions for {missing}: every robot acts every round")
        width = self.scenario.action_width
        matrix = np.zeros((len(self.possible_agents), width))  # robots that left: the neutral action
        for agent in self.agents:  # a dict of arrays in, one matrix out
            if agent not in actions:  # an offline robot may leave its action out
                continue
            try:
                row = np.asarray(actions[agent], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{agent}: action must be a numeric array of shape ({width},) "
                                 f"({self.scenario.action_meaning}), got {actions[agent]!r:.80}") from exc
            if row.shape != (width,):
                raise ValueError(f"{agent}: action must have shape ({width},) ({self.scenario.action_meaning}), "
                                 f"got {row.shape}")
            if self.scenario.checks_finite and not np.isfinite(row).all():
                raise ValueError(f"{agent}: action contains NaN or inf: {row}")
            if agent not in self._offline:  # an offline robot's action is checked, then ignored
                matrix[self._index[agent]] = row
        return matrix

    def _stacked_actions(self, actions: Any) -> np.ndarray | None:
        """The action matrix in one conversion when every robot is present, online and in order, the dict has
        exactly their actions and every one is a finite ``(width,)`` array; None otherwise (the checks of
        :meth:`_action_matrix` then name the robot at fault)."""
        if (type(actions) is not dict or self._offline or self.agents != self.possible_agents
                or actions.keys() != self._index.keys()):
            return None
        try:
            matrix = np.array([actions[a] for a in self.possible_agents], dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if matrix.shape != (len(self.possible_agents), self.scenario.action_width):
            return None
        if self.scenario.checks_finite and not np.isfinite(matrix).all():
            return None
        return matrix

    # -------------------------------------------------------------------------------------------- snapshots
    def snapshot(self) -> Snapshot:
        """The episode's state as a small picklable object (see the module docstring)."""
        face = {"agents": list(self.agents), "seed_rng": self._next_seed_rng.bit_generator.state}
        if self.scenario.fault_rngs is not None:
            face["faults"] = {"scenario": self.scenario.fault_state(), "offline": sorted(self._offline)}
        return Snapshot(SNAPSHOT_VERSION, self.metadata["name"], self.scenario.snapshot_digest(), face,
                        self.scenario.snapshot_state())

    def restore(self, snapshot: Snapshot) -> None:
        """Continue from ``snapshot`` (taken by an env of the same scenario, config and data).

        Every field is checked before anything changes: a snapshot that does not fit is a ``SnapshotError`` naming
        the field, and the env stays as it was. A snapshot is plain data, but a pickled one (and an ``sb3:`` /
        ``rllib:`` checkpoint) is a pickle: unpickling a file from an untrusted source runs its code. Load only
        snapshots you made."""
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"restore() needs a Snapshot from env.snapshot(), got {type(snapshot).__name__}")
        snapshot.check(self.metadata["name"], self.scenario.snapshot_digest())
        self._check_face(snapshot.face)
        self.scenario.check_snapshot_state(snapshot.state)
        try:
            before = self.snapshot()
        except RuntimeError:  # never reset: nothing to put back
            before = None
        try:
            self._apply(snapshot)
        except Exception as exc:  # a fault the checks could not see (a model that does not rebuild): undo
            if before is not None:
                self._apply(before)
            raise SnapshotError(f"snapshot could not be restored ({type(exc).__name__}: {exc}); the env is as it "
                                "was") from exc

    def _check_face(self, face: Any) -> None:
        agents = snapshot_entry(face, "agents", "face.agents")
        if (not isinstance(agents, list) or not all(isinstance(a, str) and a in self._index for a in agents)
                or len(set(agents)) != len(agents)):
            raise SnapshotError(f"snapshot field 'face.agents' must list distinct robots of {self.possible_agents}, "
                                f"got {agents!r:.200}")
        check_snapshot_rng(snapshot_entry(face, "seed_rng", "face.seed_rng"), "face.seed_rng")
        faults = face.get("faults")
        self.scenario.check_fault_state(None if faults is None else snapshot_entry(faults, "scenario", "face.faults"),
                                        "face.faults.scenario")
        if faults is not None:
            offline = snapshot_entry(faults, "offline", "face.faults.offline")
            if not isinstance(offline, list) or not all(isinstance(a, str) and a in self._index for a in offline):
                raise SnapshotError(f"snapshot field 'face.faults.offline' must list robots, got {offline!r:.200}")

    def _apply(self, snapshot: Snapshot) -> None:
        self.scenario.restore_state(snapshot.state)
        faults = snapshot.face.get("faults")
        self.scenario.restore_fault_state(faults["scenario"] if faults else None)
        self.agents = list(snapshot.face["agents"])
        self._offline = set(faults["offline"]) if faults else set()
        self._next_seed_rng = np.random.default_rng()
        self._next_seed_rng.bit_generator.state = snapshot.face["seed_rng"]

    # -------------------------------------------------------------------------------------- global / render
    def state(self) -> np.ndarray:
        return self.scenario.state()

    def privileged_view(self) -> dict[str, Any]:
        """Oracle-only truth (see the scenario's docstring). Policies that read it are oracles."""
        return self.scenario.privileged_view()

    def render(self):
        if self.render_mode is None:
            import gymnasium
            gymnasium.logger.warn("render() called without a render_mode; pass one of "
                                  f"{self.metadata['render_modes']}")
            return None
        out = self.scenario.render(self.render_mode)
        if self.render_mode == "human" and isinstance(out, str):  # a text-only scenario: human = print it
            print(out)
            return None
        return out

    def close(self) -> None:
        self.scenario.close()
