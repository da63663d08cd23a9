"""Analytic baselines of the Data Games paper: solvers (``solve_oracle``, ``solve_greedy``,
``solve_interactive``, ``lower_bound``) on plain arrays, and policies that act in the environment
(``baselines.policies``: greedy, interactive, oracle; registered by name in ``datagames_env.policy``)."""

from .solvers import (
    InteractiveResult,
    loss_value,
    lower_bound,
    solve_greedy,
    solve_interactive,
    solve_oracle,
)

__all__ = [
    "InteractiveResult",
    "loss_value",
    "lower_bound",
    "solve_greedy",
    "solve_interactive",
    "solve_oracle",
]
