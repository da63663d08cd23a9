"""datagames_env: fleet data collection as a multi-agent environment.

``env = datagames_env.parallel_env()`` is a PettingZoo parallel environment on the embedded default
(scikit-learn digits); ``parallel_env(config="p2p_toy")`` / ``"dual_default"`` any other scenario (the config's
``scenario`` key decides); ``datagames_env.env()`` the AEC face; ``datagames_env.vector_env(num_envs)`` B
environments at once. See README.md.
"""

from .config import ConfigError, EnvConfig, load_config
from .scenarios.datagames import DataGamesParallelEnv, raw_env
from .faces.pettingzoo import env, parallel_env, register_all
from .faces.vector import DataGamesVectorEnv, vector_env

__all__ = ["ConfigError", "DataGamesParallelEnv", "DataGamesVectorEnv", "EnvConfig", "env", "load_config",
           "parallel_env", "raw_env", "vector_env"]
__version__ = "0.1.0"

register_all()
