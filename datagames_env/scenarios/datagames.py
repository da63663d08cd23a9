"""The Data Games cloud game as a scenario: :class:`DataGamesScenario` (the core with B = 1, what ``parallel_env``
steps) and :class:`DataGamesBatched` (B envs, what ``vector_env`` steps); the faces are built from the scenario table
in :mod:`datagames_env.faces.pettingzoo` and :mod:`datagames_env.faces.vector`.

=====================  ============================================================================
Agents                 ``robot_0 ... robot_{N-1}`` (``n_robots``), all acting every round
Observation space      ``Box(-1, 1, (8C+1,), float32)`` per robot in allocation mode, layout below;
                       selection mode appends ``obs_per_round x (E + C)`` per-sample features
Action space           allocation: ``Box(0, 1, (C,), float32)``, the share of the ``n_cache`` budget per
                       *predicted* class; selection: ``Box(0, 1, (obs_per_round,), float32)``, a score per
                       observed sample, the top ``n_cache`` are uploaded. Values outside [0, 1] are
                       clipped (allocation); NaN / inf / a wrong shape raise ``ValueError``.
Reward                 ``reward: shared`` (default): identical for all robots, (d_before - d_after) /
                       (n_robots * n_cache), d the L2 distance (or KL, ``loss: kl``) between cloud class
                       counts and target counts; ``reward: marginal``: robot i gets (d_without_i - d_after)
                       / n_cache, the gain of its own uploads given the others' (a difference reward)
Episode end            after ``rounds`` steps every robot is *terminated* (never truncated): the rounds
                       are the task's horizon and the observation carries ``rounds_left``, so the
                       last round is a terminal state (no bootstrapping past it); ``agents`` becomes empty
Arguments              ``config`` (a name in ``configs/``, a YAML path, a dict or an ``EnvConfig``),
                       ``render_mode`` (``human``, ``ansi``, ``rgb_array``), ``dataset`` (an in-memory
                       ``Dataset`` to use, or the ``dataset`` config key: a name or dict), ``max_cycles`` (PettingZoo's
                       name for ``rounds``), and any config key as a keyword
=====================  ============================================================================

Observation layout (allocation mode, C classes; ``env.obs_layout`` gives the slices)::

    cloud_hist      C   cloud class counts / cloud size
    target          C   target counts / target total
    gap             C   (target - cloud) / target total, clipped to [-1, 1]
    predicted_hist  C   this round's predicted-class histogram / obs_per_round
    estimated_mix   C   the robot's estimate of its true class mix (``mix_estimator``)
    class_accuracy  C   its model's per-class validation accuracy, diag(C)
    purity          C   p(y = j | yhat = j): the diagonal of its estimated feasible matrix
    gap_fill        C   sum_y p(y | yhat = j) gap[y]: how much of the gap one upload of predicted class j fills
    rounds_left     1   (rounds - round) / rounds
    samples         obs_per_round x (E + C)  [selection mode] per sample: L2-normalised embedding
                    (E = perception.embedding_dim), then predicted class probabilities

``infos[robot]`` has the same keys at reset and at every step (numbers and arrays only): ``feasible_matrix``
(its estimate, column j = p(y | yhat = j)), ``available`` (its samples per predicted class this round),
``estimated_mix``, ``round``, the public ``cloud_counts``, ``target_counts``, ``n_cache`` and ``distance``, its
last step's uploads ``uploaded_true_labels`` and ``uploaded_predicted_labels`` (int64 ``(n_cache,)``, filled from
the left, -1 = unused slot; all -1 at reset) and their number ``n_uploaded``, and with ``final_accuracy: true``
``final_test_accuracy`` (-1 until the last step). The true class mixes and feasible matrices are privileged: only ``state()`` and ``privileged_view()`` (for oracle
policies) expose them.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from ..config import EnvConfig, load_config
from ..core import BatchedCore, World
from ..data.datasets import Dataset
from .base import (BatchedScenario, BatchTransition, SampleSpec, Scenario, SnapshotError, Transition,
                   check_snapshot_array, check_snapshot_int, check_snapshot_rng, snapshot_entry)
from . import render as render_lib
from .cloud_game import CloudGameObjective

METADATA = {"name": "datagames_v0", "render_modes": ["human", "ansi", "rgb_array"], "is_parallelizable": True,
            "render_fps": 2}


def observation_bounds(core: BatchedCore) -> tuple[np.ndarray, np.ndarray]:
    low = np.zeros(core.obs_dim, dtype=np.float32)
    high = np.ones(core.obs_dim, dtype=np.float32)
    low[core.obs_layout["gap"]] = -1.0
    low[core.obs_layout["gap_fill"]] = -1.0
    if "samples" in core.obs_layout:
        per_sample = low[core.obs_layout["samples"]].reshape(core.cfg.obs_per_round, core.sample_feature_dim)
        per_sample[:, :core.embedding_dim] = -1.0
        low[core.obs_layout["samples"]] = per_sample.ravel()
    return low, high


def action_width(core: BatchedCore) -> int:
    return core.n_classes if core.cfg.action_mode == "allocation" else core.cfg.obs_per_round


def check_core_state(core: BatchedCore, state: dict, where: str) -> None:
    """Raise :class:`SnapshotError` naming the field when ``state`` (a ``snapshot_state()`` of a core) does not fit
    ``core``: keys, shapes, dtypes, index ranges. Called before a restore changes anything."""
    def entry(key):
        return snapshot_entry(state, key, f"{where}.{key}")

    cfg = core.cfg
    b_n, n, c, k = core.num_envs, core.n_robots, core.n_classes, cfg.n_cache
    n_data, n_pool = core.world.dataset.n_samples, len(core.world.pool)
    seeds = entry("seeds")
    if not isinstance(seeds, (list, np.ndarray)) or len(seeds) != b_n:
        raise SnapshotError(f"snapshot field '{where}.seeds' must hold {b_n} seeds, got {seeds!r:.80}")
    for b, seed in enumerate(seeds):
        check_snapshot_int(seed, f"{where}.seeds.{b}", 0, 2**63 - 1)
    check_snapshot_array(entry("states"), f"{where}.states", (b_n, 4), "i")
    r = check_snapshot_int(entry("round_index"), f"{where}.round_index", 0, cfg.rounds)
    needs_reset = entry("_needs_reset")
    if not isinstance(needs_reset, (bool, np.bool_)) or bool(needs_reset) != (r == cfg.rounds):
        raise SnapshotError(f"snapshot field '{where}._needs_reset' must be {r == cfg.rounds} at round {r}")
    check_snapshot_int(entry("models_round"), f"{where}.models_round", 0, r)
    for key in ("mixes", "estimated_mixes"):
        check_snapshot_array(entry(key), f"{where}.{key}", (b_n, n, c), "f", 0.0, 1.0)
    initial = entry("initial_ids")
    if not isinstance(initial, list) or len(initial) != b_n:
        raise SnapshotError(f"snapshot field '{where}.initial_ids' must list {b_n} arrays")
    for b, ids in enumerate(initial):
        check_snapshot_array(ids, f"{where}.initial_ids.{b}", (None,), "i", 0, n_data - 1)
    check_snapshot_array(entry("cloud_counts"), f"{where}.cloud_counts", (b_n, c), "f", 0.0)
    for key in ("distance", "initial_distance"):
        check_snapshot_array(entry(key), f"{where}.{key}", (b_n,), "f")
    for key in ("histograms", "pooled_histograms"):
        check_snapshot_array(entry(key), f"{where}.{key}", (b_n, n, c), "i", 0)
    if cfg.action_mode == "selection":
        check_snapshot_array(entry("stream_positions"), f"{where}.stream_positions", (b_n, n, cfg.obs_per_round),
                             "i", 0, n_pool - 1)
    check_snapshot_array(entry("robot_version"), f"{where}.robot_version", (b_n, n), "i", 0)
    rng_states = entry("rng_states")
    if not isinstance(rng_states, list) or len(rng_states) != b_n:
        raise SnapshotError(f"snapshot field '{where}.rng_states' must list {b_n} generator states")
    for b, rng_state in enumerate(rng_states):
        check_snapshot_rng(rng_state, f"{where}.rng_states.{b}")
    ledger = entry("ledger")
    if not isinstance(ledger, list) or len(ledger) != 3:
        raise SnapshotError(f"snapshot field '{where}.ledger' must hold ids, labels and predictions")
    for name, rows, high in zip(("ids", "labels", "predicted"), ledger, (n_data - 1, c - 1, c - 1)):
        check_snapshot_array(rows, f"{where}.ledger.{name}", (b_n, r, n, k), "i", -1, high)


class DataGamesScenario(Scenario):
    """The cloud game on the batched core with B = 1 (see the module docstring)."""

    metadata = METADATA
    checks_finite = False  # the core names the robot of a NaN / inf action itself
    # every info is a fresh dict of writable arrays no other robot sees (row views of fresh (N, ...) arrays): the
    # face hands them out as they are instead of copying them per robot (0dbebaf's step speed)
    owns_info_arrays = True

    def __init__(self, config: str | dict | EnvConfig | None = None, dataset: Dataset | None = None,
                 **overrides) -> None:
        if dataset is not None and not isinstance(dataset, Dataset):
            overrides["dataset"] = dataset  # the config key: a name or a dict of dataset.* settings
            dataset = None
        if dataset is not None:
            overrides["dataset.name"] = dataset.name  # recorded in the config; the arrays come from `dataset`
        self.config = load_config(config, **overrides)
        world = World(self.config, dataset) if dataset is not None else None
        self.core = BatchedCore(self.config, CloudGameObjective, num_envs=1, world=world)
        self.n_robots = self.config.n_robots
        self.observation_low, self.observation_high = observation_bounds(self.core)
        self.action_width = action_width(self.core)
        self.action_meaning = ("a share per predicted class" if self.config.action_mode == "allocation"
                               else "a score per sample")
        n, c = self.config.n_robots, self.core.n_classes
        if self.config.action_mode == "selection":
            core = self.core
            self.sample_spec = SampleSpec(core.context_dim, self.config.obs_per_round, core.sample_feature_dim,
                                              core.embedding_dim, self.config.n_cache, rescale=True)
        self.state_space = spaces.Box(-1.0, 1.0, (3 * c + 1 + 3 * n * c,), dtype=np.float32)
        self._target_counts = self.core.target_counts.copy()
        self._target_counts.flags.writeable = False  # fixed per config; each info gets a row of its own
        self._history: list[float] = []

    @property
    def obs_layout(self) -> dict[str, slice]:
        return self.core.obs_layout

    @property
    def n_classes(self) -> int:
        return self.core.n_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.core.world.dataset.class_names

    # ----------------------------------------------------------------------------------------- loop
    def reset(self, seed: int) -> tuple[np.ndarray, list[dict]]:
        self.core.reset([seed])
        self._history = [float(self.core.distance[0])]
        return self.core.observations()[0], self._infos()

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> Transition:
        # the core validates values and is atomic; what follows only reads it
        result = self.core.step(actions[None], None if active is None else np.asarray(active, dtype=bool)[None])
        transition = Transition(self.core.observations()[0], result.rewards[0], result.terminated,
                                self._infos(result))
        self._history.append(float(result.distance[0]))
        return transition

    def snapshot_state(self) -> dict:
        return {"core": self.core.snapshot_state(), "history": list(self._history)}

    def check_snapshot_state(self, state: dict) -> None:
        core = snapshot_entry(state, "core", "state.core")
        check_core_state(self.core, core, "state.core")
        history = snapshot_entry(state, "history", "state.history")
        rounds = core["round_index"] + 1
        if (not isinstance(history, list) or len(history) != rounds
                or not all(isinstance(d, float) and np.isfinite(d) for d in history)):
            raise SnapshotError(f"snapshot field 'state.history' must list {rounds} finite distances (one per round "
                                f"played, and the start), got {history!r:.120}")

    def restore_state(self, state: dict) -> None:
        self.core.restore_state(state["core"])
        self._history = list(state["history"])

    def content_arrays(self):
        dataset = self.core.world.dataset
        return dataset, [dataset.features, dataset.labels]

    def _infos(self, result=None) -> list[dict]:
        # one fresh array per quantity per step; robots get row views of it (never mutated afterwards).
        # Fixed schema (TorchRL, seed_test): the same keys at reset and every step, numbers and arrays only.
        # Built row by row with zip (no per-robot indexing): this runs every step of parallel_env.
        core = self.core
        cfg = core.cfg
        n, k = self.n_robots, cfg.n_cache
        feasible = core.estimated_feasible_matrices()[0]  # fresh
        available = core.histograms[0].copy()
        mixes = core.estimated_mixes[0].copy()
        cloud = np.empty((n, core.n_classes))  # a row per robot: no robot's array aliases another's
        cloud[:] = core.cloud_counts[0]
        target = np.empty((n, core.n_classes))
        target[:] = self._target_counts
        distance = float(core.distance[0])
        round_index = core.round_index
        if result is not None:  # the step's upload arrays are fresh and the core keeps no reference to them
            labels, predicted = result.uploaded_labels[0], result.uploaded_predicted[0]
        else:  # nothing uploaded yet: every slot unused
            labels = np.full((n, k), -1, dtype=np.int64)
            predicted = labels.copy()
        n_uploaded = np.count_nonzero(labels >= 0, axis=1).tolist()  # slots are filled from the left
        rows = zip(available, feasible, mixes, cloud, target, labels, predicted, n_uploaded)
        if cfg.final_accuracy:  # -1 until the episode's last step computed it
            final = result.final_test_accuracy if result is not None else None
            final = float(final[0]) if final is not None else -1.0
            return [{"available": a, "feasible_matrix": f, "estimated_mix": m, "round": round_index,
                     "cloud_counts": cc, "target_counts": t, "n_cache": k, "distance": distance,
                     "final_test_accuracy": final, "uploaded_true_labels": ul, "uploaded_predicted_labels": up,
                     "n_uploaded": u} for a, f, m, cc, t, ul, up, u in rows]
        return [{"available": a, "feasible_matrix": f, "estimated_mix": m, "round": round_index,
                 "cloud_counts": cc, "target_counts": t, "n_cache": k, "distance": distance,
                 "uploaded_true_labels": ul, "uploaded_predicted_labels": up, "n_uploaded": u}
                for a, f, m, cc, t, ul, up, u in rows]

    # ------------------------------------------------------------------------------ global / privileged
    def state(self) -> np.ndarray:
        """Global state: cloud_hist, target, gap, rounds_left, then per robot its true mix, predicted
        histogram and class accuracy (the true mixes make this privileged)."""
        obs = self.core.observations()[0]
        lay = self.core.obs_layout
        shared = np.concatenate([obs[0, lay["cloud_hist"]], obs[0, lay["target"]], obs[0, lay["gap"]],
                                 obs[0, lay["rounds_left"]]])
        per_robot = np.concatenate([self.core.mixes[0].ravel(), obs[:, lay["predicted_hist"]].ravel(),
                                    obs[:, lay["class_accuracy"]].ravel()])
        return np.concatenate([shared, per_robot]).astype(np.float32)

    def privileged_view(self) -> dict[str, np.ndarray]:
        """Oracle-only truth: true class mixes (N, C), true feasible matrices (N, C, C), available counts
        per predicted class (N, C), cloud and target counts, n_cache. Policies that read it are oracles."""
        core = self.core
        return {"true_mixes": core.mixes[0].copy(), "true_feasible_matrices": core.true_feasible_matrices()[0],
                "available": core.histograms[0].copy(), "cloud_counts": core.cloud_counts[0].copy(),
                "target_counts": core.target_counts.copy(), "n_cache": core.cfg.n_cache}

    def ledger(self) -> dict[str, np.ndarray]:
        return self.core.ledger(0)

    @property
    def distance_history(self) -> list[float]:
        return list(self._history)

    # --------------------------------------------------------------------------------------- render
    def render(self, mode: str):
        text = render_lib.ansi_table(self)
        if mode == "ansi":
            return text
        if mode == "rgb_array":
            return render_lib.bar_chart_rgb(self)
        render_lib.show_human(self, text)
        return None

    def close(self) -> None:
        render_lib.close(self)


class DataGamesBatched(BatchedScenario):
    """The cloud game over B environments: the batched core as a :class:`~.base.BatchedScenario` (what every batched
    face steps; ``parallel_env`` stays on :class:`DataGamesScenario`, the same core at B = 1).

    =====================  ============================================================================
    Infos                  robot keys ``available`` (B, N, C) int64 (samples per predicted class this round),
                           ``uploaded_labels`` (B, N, n_cache) int64 (true labels of the last step's uploads,
                           filled from the left, -1 = unused slot; all -1 at reset); env keys ``cloud_counts``
                           (B, C), ``distance`` (B,), ``round`` (B,) int64 and, with ``final_accuracy: true``,
                           ``final_test_accuracy`` (B,) (-1 until the last step). Estimated feasible matrices cost
                           B*N*C*C per call: :meth:`estimated_feasible_matrices` computes them on demand
    ``state()``            ``(B, 3C + 1 + 3NC)``: :meth:`DataGamesScenario.state` of every env (privileged)
    ``privileged_view()``  ``true_mixes`` (B, N, C), ``true_feasible_matrices`` (B, N, C, C), ``available``
                           (B, N, C), ``cloud_counts`` (B, C), ``target_counts`` (B, C), ``n_cache`` (B,)
    snapshots              the core's ``snapshot_state()``, checked field by field (:func:`check_core_state`)
    =====================  ============================================================================
    """

    metadata = METADATA
    checks_finite = False  # the core names the env and robot of a NaN / inf action itself
    robot_info_keys = ("available", "uploaded_labels")

    def __init__(self, config: str | dict | EnvConfig | None = None, num_envs: int = 1, **overrides) -> None:
        self.config = load_config(config, **overrides)
        self.core = BatchedCore(self.config, CloudGameObjective, num_envs=num_envs)
        self.num_envs, self.n_robots = num_envs, self.config.n_robots
        self.observation_low, self.observation_high = observation_bounds(self.core)
        self.action_width = action_width(self.core)
        self.action_meaning = ("a share per predicted class" if self.config.action_mode == "allocation"
                               else "a score per sample")
        if self.config.action_mode == "selection":
            core = self.core
            self.sample_spec = SampleSpec(core.context_dim, self.config.obs_per_round, core.sample_feature_dim,
                                          core.embedding_dim, self.config.n_cache, rescale=True)
        c = self.core.n_classes
        self.state_dim = 3 * c + 1 + 3 * self.n_robots * c
        self.env_info_keys = ("cloud_counts", "distance", "round") + (
            ("final_test_accuracy",) if self.config.final_accuracy else ())
        self._obs: np.ndarray | None = None  # the last observations handed out (state() reads them)

    @property
    def obs_layout(self) -> dict[str, slice]:
        return self.core.obs_layout

    @property
    def n_classes(self) -> int:
        return self.core.n_classes

    def reset(self, seeds: np.ndarray) -> tuple[np.ndarray, dict]:
        self.core.reset(seeds)
        self._obs = self.core.observations()
        return self._obs, self._infos()

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> BatchTransition:
        result = self.core.step(actions, active)  # validates (naming env and robot) and is atomic
        self._obs = self.core.observations()
        return BatchTransition(self._obs, result.rewards, np.full(self.num_envs, result.terminated),
                               self._infos(result))

    def _infos(self, result=None) -> dict:
        core, b_n = self.core, self.num_envs
        infos = {"available": core.histograms.copy(),
                 "uploaded_labels": (result.uploaded_labels if result is not None else
                                     np.full((b_n, self.n_robots, self.config.n_cache), -1, np.int64)),
                 "cloud_counts": core.cloud_counts.copy(), "distance": core.distance.copy(),
                 "round": np.full(b_n, core.round_index, dtype=np.int64)}
        if self.config.final_accuracy:  # -1 until the last step computed it
            final = result.final_test_accuracy if result is not None else None
            infos["final_test_accuracy"] = final if final is not None else np.full(b_n, -1.0)
        return infos

    def state(self) -> np.ndarray:
        obs = self._obs if self._obs is not None else self.core.observations()
        lay, b = self.core.obs_layout, obs.shape[0]
        first = obs[:, 0]
        parts = [first[:, lay["cloud_hist"]], first[:, lay["target"]], first[:, lay["gap"]], first[:, lay["rounds_left"]],
                 self.core.mixes.reshape(b, -1), obs[:, :, lay["predicted_hist"]].reshape(b, -1),
                 obs[:, :, lay["class_accuracy"]].reshape(b, -1)]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def estimated_feasible_matrices(self) -> np.ndarray:
        return self.core.estimated_feasible_matrices()

    def privileged_view(self) -> dict[str, np.ndarray]:
        core, b_n = self.core, self.num_envs
        return {"true_mixes": core.mixes.copy(), "true_feasible_matrices": core.true_feasible_matrices(),
                "available": core.histograms.copy(), "cloud_counts": core.cloud_counts.copy(),
                "target_counts": np.tile(core.target_counts, (b_n, 1)),
                "n_cache": np.full(b_n, core.cfg.n_cache, dtype=np.int64)}

    def snapshot_state(self) -> dict:
        return self.core.snapshot_state()

    def check_snapshot_state(self, state: dict) -> None:
        check_core_state(self.core, state, "state")

    def restore_state(self, state: dict) -> None:
        self.core.restore_state(state)
        self._obs = None

    def content_arrays(self):
        dataset = self.core.world.dataset
        return dataset, [dataset.features, dataset.labels]


def batched(config: EnvConfig, num_envs: int) -> DataGamesBatched:
    """The ``batched`` entry of the scenario table: every cloud-game config has a native batched implementation."""
    return DataGamesBatched(config, num_envs)
