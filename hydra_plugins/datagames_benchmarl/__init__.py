"""Hydra search path plugin: BenchMARL's own CLI sees the datagames task family.

``python -m benchmarl.run algorithm=mappo task=datagames/default`` needs two things BenchMARL 1.5.2 only offers
for the families inside its own package: the task YAML on hydra's search path (``task/datagames/<task>.yaml``)
and the task in ``benchmarl.environments.task_config_registry``. Hydra imports every module of the
``hydra_plugins`` namespace package when it builds a search path; this plugin then adds both, but only in a
process that has imported BenchMARL's task registry (any other hydra app is left as it is). Kept light: nothing
of datagames_env or torch is imported until BenchMARL already is.
"""

from __future__ import annotations

import sys

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class DataGamesBenchMARLSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if "benchmarl.environments" not in sys.modules:
            return
        from datagames_env.faces.benchmarl import HYDRA_CONFIG_DIR, register

        register()
        search_path.append(provider="datagames_env", path=f"file://{HYDRA_CONFIG_DIR}")
