"""datagames_env: fleet data collection as a multi-agent environment.

``env = datagames_env.parallel_env()`` is a PettingZoo parallel environment on the embedded default
(scikit-learn digits); ``datagames_env.env()`` the AEC face; ``datagames_env.vector_env(num_envs)`` B
environments at once. See README.md.
"""

from .config import ConfigError, EnvConfig, load_config
from .env import DataGamesParallelEnv, env, parallel_env, raw_env
from .vector import DataGamesVectorEnv, vector_env

__all__ = ["ConfigError", "DataGamesParallelEnv", "DataGamesVectorEnv", "EnvConfig", "env", "load_config",
           "parallel_env", "raw_env", "vector_env"]
__version__ = "0.1.0"


def _register() -> None:
    try:
        from pettingzoo import register
    except ImportError:  # PettingZoo < 1.27 has no registry
        return
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # re-imports re-register the same ids
        register("parallel", "datagames/DataGames-v0", "datagames_env.env:parallel_env")
        register("aec", "datagames/DataGames-v0", "datagames_env.env:env")
        register("parallel", "datagames/P2P-v0", "datagames_env.p2p:parallel_env")
        register("parallel", "datagames/Dual-v0", "datagames_env.dual:parallel_env")


_register()
