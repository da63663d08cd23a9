"""Facility-location selection: moved to :mod:`datagames_env.selection.submodular` (the DUAL environment uses it,
and ``datagames_env`` never imports ``baselines``). This module re-exports it for the policies and old imports."""

from datagames_env.selection.submodular import *  # noqa: F401,F403
from datagames_env.selection.submodular import __all__  # noqa: F401
