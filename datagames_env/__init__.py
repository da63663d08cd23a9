"""datagames_env: fleet data collection as a multi-agent environment.

``env = datagames_env.parallel_env()`` is a PettingZoo parallel environment on the embedded default
(scikit-learn digits); ``parallel_env(config="p2p_toy")`` / ``"dual_default"`` any other scenario (the config's
``scenario`` key decides); ``datagames_env.env()`` the AEC face; ``datagames_env.vector_env(num_envs, config)`` B
environments of any scenario at once; ``datagames_env.torchrl_env(num_envs, config)`` the same batch as a TorchRL
``EnvBase`` (needs the ``benchmarl`` extra; imported on first use, so ``import datagames_env`` never imports torchrl). See README.md and the docs site (``make docs``).
"""

from .config import ConfigError, EnvConfig, load_config
from .faces.pettingzoo import DataGamesParallelEnv, env, parallel_env, raw_env, register_all
from .faces.vector import DataGamesVectorEnv, VectorEnv, vector_env

__all__ = ["ConfigError", "DataGamesParallelEnv", "DataGamesVectorEnv", "EnvConfig", "VectorEnv", "env",
           "load_config", "parallel_env", "raw_env", "vector_env"]  # torchrl_env: lazy, below
__version__ = "0.1.0"

register_all()

# faces with heavy optional dependencies, imported on first attribute access (PEP 562)
_LAZY = {"torchrl_env": ".faces.torchrl", "DataGamesTorchRLEnv": ".faces.torchrl", "FleetTorchRLEnv": ".faces.torchrl"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
