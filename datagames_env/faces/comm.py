"""Learned communication: K sweeps of the ``interactive-sum`` protocol's messages before the robots act.

Like Interactive (Algorithm 1 with a shared running sum), each robot announces the contribution it intends to make,
``m_i = P_i c_i`` (its estimated feasible matrix times its tentative upload counts: C floats, the expected true
counts it would add), and reads the fleet's sum. Unlike Interactive, what a robot does with the sum is learned.

A round with ``message_sweeps = K`` is K + 1 decisions of the same policy: in sweeps 1..K the robot's action is
only announced (its counts -> its message), in the last one it is executed. Before each decision a robot sees its
own observation plus two per-class blocks computed from the others' latest messages (the first sweep sees zeros):

=================  ==========================================================================================
others_intent      C   ``(s - m_i) / target_total``: what the rest of the fleet intends to add, per true class
residual_fill      C   ``sum_y P_i[y, j] clip(gap_y - others_intent_y)``: ``gap_fill`` against the gap the others
                       leave (how much of it one upload of predicted class j would fill)
sweeps_left        1   ``(K - sweep) / K``: 0 at the decision that is executed
=================  ==========================================================================================

The layout of a robot's observation becomes ``[8 class blocks, others_intent, residual_fill, rounds_left,
sweeps_left]`` (10 C + 2). Messages are counted like ``interactive-sum``'s: each sweep every robot writes its
message and reads the sum, ``2 N`` per sweep, ``2 N K`` per round.

The same functions serve training (:class:`datagames_env.faces.rllib.RLlibMultiAgentEnv` with ``message_sweeps``: the sweeps
are sub-steps with reward 0, so PPO learns the announcements too) and evaluation (the checkpoint policy runs the
sweeps inside ``act``), and they read only what a robot has: its own observation and infos (``feasible_matrix``,
``available``, ``target_counts``, ``n_cache``) and the sum of the others' messages.
"""

from __future__ import annotations

import numpy as np

from ..core import allocation_counts
from ..policy import load_entry_point

__all__ = ["MAX_SWEEPS", "MESSAGE_BLOCKS", "MessageSweeps", "check_sweeps", "interactive_fraction_shares",
           "sweep_messages"]

MESSAGE_BLOCKS = ("others_intent", "residual_fill")
MAX_SWEEPS = 3
# the solver's arithmetic lives with Greedy's (baselines sit below the faces; this package reaches them by entry
# point only, as faces/torchrl.py reaches the gap-fraction map)
SWEEP_MAP = "baselines.sweep_fraction:interactive_fraction_shares"


def sweep_messages(n_robots: int, sweeps: int) -> int:
    """Messages of one round of the structured protocol, counted as Interactive's ``broadcast="all"`` figure (the
    73k per episode on `default`): every robot sends its first plan and each sweep's new plan to every other."""
    return n_robots * (n_robots - 1) * (1 + sweeps)


def interactive_fraction_shares(feasible, cloud, target, fraction, n_cache, available, sweeps: int) -> np.ndarray:
    """The structured communication action (``--model sweep-fraction``; docs/learned.md, "Communication").

    Each robot i has one fraction ``f_i`` in [0, 1] (the learned part). Its first announcement is Greedy towards
    ``f_i`` of the gap (``baselines.fraction``); then ``sweeps`` Gauss-Seidel sweeps, as Interactive's (robot by
    robot, each reading the others' latest announcements ``o_i``): robot i runs Greedy's solver towards ``f_i`` of
    the gap the others leave, ``min_{a in S_i} ||P_i a - f_i (target - cloud - o_i)||``, and announces ``P_i a``.
    The last sweep's plan is uploaded. At ``f = 1`` this is Interactive capped at ``sweeps`` sweeps (its Greedy
    start and best responses; tested to a tolerance). L2 loss only (Wolfe, compiled). The arithmetic is
    ``baselines.sweep_fraction.interactive_fraction_shares`` (loaded by entry point); this checks ``sweeps`` against the
    protocol's ``MAX_SWEEPS``.

    ``feasible`` (B, N, C, C) estimated feasible matrices, ``cloud`` (B, C), ``target`` (B, C) or (C,),
    ``fraction`` (B, N), ``available`` (B, N, C). Returns shares ``counts / n_cache`` (B, N, C) in [0, 1]."""
    return load_entry_point(SWEEP_MAP)(feasible, cloud, target, fraction, n_cache, available,
                                       check_sweeps(sweeps))


def check_sweeps(sweeps: int) -> int:
    if not 0 <= int(sweeps) <= MAX_SWEEPS:
        raise ValueError(f"message_sweeps must be in 0..{MAX_SWEEPS}, got {sweeps}")
    return int(sweeps)


def upload_counts(shares: np.ndarray, available: np.ndarray, n_cache: int) -> np.ndarray:
    """(N, C) shares (clipped to [0, 1]) -> the integer counts the environment would upload (its own rounding)."""
    return allocation_counts(np.clip(shares, 0.0, 1.0), available, n_cache)


def message_blocks(gap: np.ndarray, feasible: np.ndarray, counts: np.ndarray, target_total: float) -> np.ndarray:
    """(N, 2C): ``others_intent`` and ``residual_fill`` for every robot, from the robots' tentative ``counts`` (N, C),
    their estimated feasible matrices (N, C, C; column j = p(y | yhat = j)) and the public ``gap`` (C,) of the
    observation (clipped (target - cloud) / target_total)."""
    intents = np.einsum("nyj,nj->ny", feasible, counts) / target_total     # each robot's message, normalised
    others = intents.sum(axis=0, keepdims=True) - intents                  # the sum it reads, less its own
    residual = np.clip(gap[None, :] - others, -1.0, 1.0)
    residual_fill = np.einsum("nyj,ny->nj", feasible, residual)
    return np.concatenate([others, residual_fill], axis=1)


def message_observations(own: np.ndarray, messages: np.ndarray, n_classes: int, sweeps_left: float) -> np.ndarray:
    """(N, 8C+1) own observations + (N, 2C) message blocks -> (N, 10C+2) in the layout of the module docstring."""
    c8 = 8 * n_classes
    n = own.shape[0]
    return np.concatenate([own[:, :c8], messages, own[:, c8:], np.full((n, 1), sweeps_left)], axis=1
                          ).astype(np.float32)


def robot_arrays(observations: dict, infos: dict, agents: list[str]):
    """Stack what the protocol needs from the robots' own observations and infos."""
    first = infos[agents[0]]
    feasible = np.stack([infos[a]["feasible_matrix"] for a in agents])
    available = np.stack([infos[a]["available"] for a in agents])
    own = np.stack([observations[a] for a in agents])
    return own, feasible, available, float(np.sum(first["target_counts"])), int(first["n_cache"])


class MessageSweeps:
    """The protocol's state within one round, for N robots: ``observations()`` before each decision,
    ``announce(shares)`` after a decision that is not executed."""

    def __init__(self, sweeps: int, observations: dict, infos: dict, agents: list[str], gap_slice: slice,
                 n_classes: int) -> None:
        self.sweeps = check_sweeps(sweeps)
        self.agents = list(agents)
        self.n_classes = n_classes
        self.own, self.feasible, self.available, self.target_total, self.n_cache = robot_arrays(
            observations, infos, self.agents)
        self.gap = self.own[0, gap_slice].astype(np.float64)
        self.messages = np.zeros((len(self.agents), 2 * n_classes))
        self.sweep = 0

    @property
    def executing(self) -> bool:
        return self.sweep >= self.sweeps

    def observations(self) -> np.ndarray:
        left = (self.sweeps - self.sweep) / self.sweeps if self.sweeps else 0.0
        return message_observations(self.own, self.messages, self.n_classes, left)

    def announce(self, shares: np.ndarray) -> None:
        counts = upload_counts(shares, self.available, self.n_cache)
        self.messages = message_blocks(self.gap, self.feasible, counts, self.target_total)
        self.sweep += 1

    def message_count(self) -> int:
        return 2 * len(self.agents) * self.sweeps
