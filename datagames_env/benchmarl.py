"""``datagames_env.benchmarl``: the BenchMARL task family (``DataGamesTask``); see :mod:`datagames_env.faces.benchmarl`.

Needs the ``benchmarl`` extra (``pip install -e '.[benchmarl]'``); ``import datagames_env`` never imports it."""

from .faces.benchmarl import DataGamesClass, DataGamesTask, make_task, task_config_path

__all__ = ["DataGamesClass", "DataGamesTask", "make_task", "task_config_path"]
