"""Third-party notices that every training run printed and that say nothing about the run.

The project starts nothing that causes them: each comes from inside Ray / RLlib on its default path. They are
filtered by message, on the logger that emits each, only while a ``datagames train`` / ``eval`` call runs
(:func:`quiet_third_party`); nothing global is changed and every other record of those loggers passes.

==========================================  ==================================================================
notice                                      why it is not fixed at its source
==========================================  ==================================================================
``Token authentication is enabled ...``     Ray 2.60 prints it whenever ``ray.init()`` starts a local runtime
                                            with its default (token) mode; choosing the mode by environment
                                            variable needs Ray's private config reload as well
``RLModule(config=...)`` deprecation        RLlib 2.60's own ``RLModule.__init__`` builds an ``RLModuleConfig``
``You are running PPO on the new API``      RLlib logs it for every new-stack PPO, explicit ``api_stack`` or not
``Install gputil for GPU system ...``       Tune's system monitor (CPU and RAM still logged); GPUtil is
                                            unmaintained and not a dependency
==========================================  ==================================================================
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

# logger name -> message fragments dropped on it
NOTICES: dict[str, tuple[str, ...]] = {
    "ray._private.authentication.authentication_token_setup": ("Token authentication is enabled for this Ray",),
    "ray._common.deprecation": ("RLModule(config=",),
    "ray.rllib.algorithms.algorithm_config": ("on the new API stack!",),
    "ray.tune.utils.util": ("Install gputil",),
}


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


@contextmanager
def quiet_third_party():
    """Drop the notices of ``NOTICES`` while the block runs; the loggers get their filters back after."""
    installed = []
    for name, fragments in NOTICES.items():
        logger, drop = logging.getLogger(name), _DropMessages(fragments)
        logger.addFilter(drop)
        installed.append((logger, drop))
    try:
        yield
    finally:
        for logger, drop in installed:
            logger.removeFilter(drop)
