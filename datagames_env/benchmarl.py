"""``datagames_env.benchmarl``: the BenchMARL task family (``DataGamesTask``); see :mod:`datagames_env.faces.benchmarl`.

Needs the ``benchmarl`` extra (``pip install -e '.[benchmarl]'``); ``import datagames_env`` never imports it."""

from .faces.benchmarl import HYDRA_CONFIG_DIR, DataGamesClass, DataGamesTask, make_task, register, task_config_path

__all__ = ["DataGamesClass", "DataGamesTask", "HYDRA_CONFIG_DIR", "make_task", "register", "task_config_path"]
