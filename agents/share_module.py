"""``--model gap-share``: the gap-fraction network and Beta (:class:`agents.modules.GapFractionModule`), whose one
number per robot is the floor m of ``greedy-share`` (``baselines.fraction``): each class's fraction of the gap is
``max(m, the robot's share of last round's public uploads of the class)``. No messages."""

from __future__ import annotations

from .modules import GapFractionModule

__all__ = ["GapShareModule"]


class GapShareModule(GapFractionModule):
    """:class:`GapFractionModule` with another map from its action to the environment's (``greedy-share``); the
    vector runner (``agents.rllib_vector_runner.greedy_share_actions``) and ``rllib:`` evaluation apply it."""

    env_action = "greedy-share"
