"""The harness every scenario shares: one episode loop, one evaluation, one results writer, one command line.

=================  ==========================================================================================
module             what
=================  ==========================================================================================
``episode``        ``run_episode(env, policy, seed)``, ``Job`` and ``run_job`` (one picklable episode)
``evaluate``       ``evaluate(config, policies, seeds, out_dir)`` (local processes or Ray), ``write_results``,
                   ``report(folder)``
``reports``        per scenario: round and episode records, summary, CSV, plots, the ``run`` table
``cli``            ``datagames run|eval|report|train|warmup`` (``datagames p2p ...``, ``datagames dual ...``)
``warmup``         compile the numba kernels ahead; tell a first run they compile once
=================  ==========================================================================================

Nothing here imports ``baselines`` or ``agents``: policies and trainers are built from entry points.
"""

from .episode import Job, run_episode, run_job
from .evaluate import evaluate, report, write_results

__all__ = ["Job", "evaluate", "report", "run_episode", "run_job", "write_results"]
