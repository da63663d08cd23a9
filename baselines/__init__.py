"""Analytic baselines of the Data Games paper. Filled by the baselines issue."""

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
