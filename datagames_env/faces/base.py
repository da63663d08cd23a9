"""The one PettingZoo parallel face of every scenario: :class:`FleetParallelEnv` over a
:class:`~datagames_env.scenarios.base.Scenario`.

=====================  ============================================================================
Agents                 ``robot_0 ... robot_{N-1}``; ``agents`` is every robot during an episode (less those that
                       left, below), empty after it
Spaces                 one ``Box`` object per agent, returned by every call (PettingZoo compares them):
                       the scenario's observation bounds, actions ``Box(0, 1, (A,), float32)``
Seeding                ``reset(seed)`` restarts a seed sequence, so later ``reset()`` calls without a seed are
                       reproducible too; a negative seed is an error
Actions                a dict with one array per active robot; a missing / unknown robot, a wrong shape or NaN /
                       inf raise ``ValueError`` naming the robot, before any state changes
Robots leaving         a robot removed from ``agents`` during an episode (``env.agents.remove("robot_1")``) has
                       left until the next ``reset()``: it sends no action, gets no observation / reward /
                       termination / info entry, and acts with the neutral action (zeros) while the scenario is
                       told it is inactive: it uploads / shares / receives nothing (cloud game: no upload; dual:
                       no upload; p2p: no cache, no send, no receive, no retraining). Its stream still draws, so
                       the others' episode goes on draw for draw as if it were idle. Removing every robot ends
                       stepping (``step`` needs an active robot); a robot put back into ``agents`` acts again
                       from the next step; a name that is not a robot is an error
Faults                 the config's ``faults`` block (off by default). ``dropout`` / ``rejoin``: after every
                       step that is not the episode's last, each robot draws once from the episode's fault
                       generator; an active robot drops with probability ``dropout``: it is in that step's dicts
                       (it played the round) with termination True, and leaves ``agents``; from the next step it is
                       an inactive robot as above. A robot that dropped earlier rejoins with probability ``rejoin``
                       per round: it reappears in that step's dicts (observation of the next round, reward 0.0,
                       termination / truncation False, its info) and is back in ``agents``, so it acts from the
                       next step. Every robot is back at the next ``reset()``. When every robot has dropped,
                       ``agents`` is empty and stepping ends (nobody is left to act). ``liars`` are drawn once per
                       episode (``env.liars``, bool per robot); the scenario or the policy's protocol uses them
Episode end            the scenario's last round terminates every robot (never a truncation); ``agents`` empties
Snapshots              ``snapshot()``: a small picklable :class:`~datagames_env.scenarios.base.Snapshot` (no
                       dataset, no model the config rebuilds); ``restore(snapshot)`` on an env of the same config
                       continues bit-exactly; another scenario, config or snapshot version is a ``SnapshotError``
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

from ..scenarios.base import SNAPSHOT_VERSION, Scenario, Snapshot, config_digest

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
        self._dropped: set[str] = set()  # robots that dropped out as a fault (they may rejoin)

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
        self._dropped = set()
        if self.render_mode == "human":
            self.render()
        return self._per_agent(observations), self._per_agent(infos)

    def step(self, actions: dict):
        matrix = self._action_matrix(actions)
        present = set(self.agents)  # membership tests on a set: O(N) per step, not O(N^2), at fleet sizes
        active = np.array([a in present for a in self.possible_agents])
        transition = self.scenario.step(matrix, None if active.all() else active)
        agents = list(self.agents)
        dropping, rejoining = self._fault_dropouts(transition.terminated)
        shown = [a for a in self.possible_agents if a in present or a in rejoining]
        observations = {a: transition.observations[self._index[a]] for a in shown}
        infos = {a: transition.infos[self._index[a]] for a in shown}
        rewards = {a: float(transition.rewards[self._index[a]]) if a in agents else 0.0 for a in shown}
        terminations = {a: bool(transition.terminated) or a in dropping for a in shown}
        truncations = {a: False for a in shown}
        if transition.terminated:
            self.agents = []
        elif dropping or rejoining:
            self._dropped = (self._dropped | set(dropping)) - set(rejoining)
            self.agents = [a for a in self.possible_agents if (a in agents and a not in dropping) or a in rejoining]
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos

    def _fault_dropouts(self, terminated: bool) -> tuple[list[str], list[str]]:
        """Who drops out and who rejoins after this step (module docstring): one uniform draw per robot per
        round from the scenario's ``agents`` fault generator, so a robot's draws do not depend on the others."""
        faults = self.scenario.faults
        if terminated or faults is None or not faults.dropout:
            return [], []
        draws = self.scenario.fault_rngs["agents"].random(len(self.possible_agents))
        dropping = [a for a, u in zip(self.possible_agents, draws) if a in self.agents and u < faults.dropout]
        rejoining = [a for a, u in zip(self.possible_agents, draws) if a in self._dropped and u < faults.rejoin]
        return dropping, rejoining

    def _per_agent(self, rows) -> dict[str, Any]:
        return {a: rows[self._index[a]] for a in self.agents}

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
        strangers = [a for a in self.agents if a not in self._index]
        if strangers:
            raise ValueError(f"agents holds unknown names {strangers}: robots may leave agents, not join it")
        present = set(self.agents)
        unknown = [a for a in actions if a not in self._index or a not in present]
        if unknown:
            raise ValueError(f"actions for unknown or inactive agents {unknown}; active agents are {self.agents}")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"missing actions for {missing}: every robot acts every round")
        width = self.scenario.action_width
        matrix = np.zeros((len(self.possible_agents), width))  # robots that left: the neutral action
        for agent in self.agents:  # a dict of arrays in, one matrix out
            row = np.asarray(actions[agent], dtype=np.float64)
            if row.shape != (width,):
                raise ValueError(f"{agent}: action must have shape ({width},) ({self.scenario.action_meaning}), "
                                 f"got {row.shape}")
            if self.scenario.checks_finite and not np.isfinite(row).all():
                raise ValueError(f"{agent}: action contains NaN or inf: {row}")
            matrix[self._index[agent]] = row
        return matrix

    # -------------------------------------------------------------------------------------------- snapshots
    def snapshot(self) -> Snapshot:
        """The episode's state as a small picklable object (see the module docstring)."""
        face = {"agents": list(self.agents), "seed_rng": self._next_seed_rng.bit_generator.state}
        if self.scenario.fault_rngs is not None:
            face["faults"] = {"scenario": self.scenario.fault_state(), "dropped": sorted(self._dropped)}
        return Snapshot(SNAPSHOT_VERSION, self.metadata["name"], config_digest(self.config), face,
                        self.scenario.snapshot_state())

    def restore(self, snapshot: Snapshot) -> None:
        """Continue from ``snapshot`` (taken by an env of the same scenario and config)."""
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"restore() needs a Snapshot from env.snapshot(), got {type(snapshot).__name__}")
        snapshot.check(self.metadata["name"], config_digest(self.config))
        self.scenario.restore_state(snapshot.state)
        self.agents = list(snapshot.face["agents"])
        faults = snapshot.face.get("faults")
        self.scenario.restore_fault_state(faults["scenario"] if faults else None)
        self._dropped = set(faults["dropped"]) if faults else set()
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
