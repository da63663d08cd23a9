"""DUAL's stage 2 (the cloud's submodular labeler) on BADGE gradient embeddings, for measuring Fleet-AL's choice.

The labeler runs inside the scenario's step, so the embedding of stage 2 is a property of the scenario, not of a
policy. This module keeps the experiment out of the scenario modules: :class:`BadgeLabelFastDual` is
:class:`~datagames_env.scenarios.dual_fast.FastDual` whose ``labeler: submodular`` runs facility location on
:func:`~baselines.dual_policies.badge_embeddings` of the candidates and of the labeled set under each env's
current head (Fleet-AL computes its dataset's coverage ``M_max`` the same way); every other labeler, and
everything else, is FastDual's.

=====================  ===================================================================================
Piece                  BADGE labeler
=====================  ===================================================================================
candidates             the distinct unlabeled rows in order of first upload, weighted by their ledger copies
                       (as FastDual)
embedding              ``(onehot(argmax p) - p) (x) e`` with ``p`` the env's head on the row, ``e`` the unit
                       frozen features (the observation's embedding)
coverage               best kernel similarity to the labeled rows' BADGE embeddings under the same head
selection              lazy greedy, picks with positive gain, then ledger order (as FastDual)
``label_objective``    the facility-location value in BADGE space (not comparable with the feature labeler's)
=====================  ===================================================================================

:class:`BadgeLabelDualScenario` does the same on the paper tier (:class:`~datagames_env.scenarios.dual.DualScenario`,
the cloud network's probabilities and embeddings). ``badge_scenario("dual_default", labeler="submodular")`` is the
B = 1 scenario of the config's tier; a face wraps it (``DualParallelEnv(scenario=badge_scenario(...))``: baselines
sit below the faces and import none). ``kernel: inverse_distance`` only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datagames_env.config import ConfigError
from datagames_env.perception import limited_torch_threads
from datagames_env.scenarios.batching import BatchOfOne
from datagames_env.scenarios.dual import DualScenario, load_dual_config
from datagames_env.scenarios.dual_fast import FastDual, distinct_in_upload_order
from datagames_env.selection.submodular import FacilityLocation, lazy_greedy, max_similarity

from .dual_policies import badge_embeddings, badge_origin_coverage

__all__ = ["BadgeLabelDualScenario", "BadgeLabelFastDual", "badge_scenario"]


def _check_kernel(cfg) -> None:
    try:
        badge_origin_coverage(np.zeros((0, 1)), cfg.kernel, cfg.kernel_scale)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _badge_greedy(cand_emb, cand_probs, labeled_emb, labeled_probs, copies, budget, cfg):
    """Facility location on BADGE embeddings: the candidates' coverage by the labeled set, lazy greedy."""
    ground = badge_embeddings(cand_emb, cand_probs)
    reference = badge_embeddings(labeled_emb, labeled_probs)
    with limited_torch_threads(1):
        covered = max_similarity(ground, reference, cfg.kernel, cfg.kernel_scale, cfg.max_block_bytes)
        fl = FacilityLocation(ground, None, covered, cfg.kernel, cfg.kernel_scale, cfg.max_block_bytes,
                              weights=copies)
        return lazy_greedy(fl, min(budget, len(ground)))


class BadgeLabelFastDual(FastDual):
    """FastDual whose ``submodular`` labeler works on BADGE embeddings (module docstring)."""

    def __init__(self, config: Any = None, num_envs: int = 1, **overrides: Any) -> None:
        super().__init__(config, num_envs, **overrides)
        _check_kernel(self.config)

    def _label(self, candidates: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        cfg = self.config
        if cfg.labeler != "submodular":
            return super()._label(candidates)
        b_n = self.num_envs
        picks_out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * b_n
        values = np.zeros(b_n)
        used = self._used()
        prepared = []
        for b, cand in enumerate(candidates):
            if len(cand) == 0:
                continue
            rows, first, inverse, copies = distinct_in_upload_order(self.ledger["row"][b, cand])
            ledger_rows = self.ledger["row"][b, :used]
            labeled = np.unique(ledger_rows[self.ledger["labeled"][b, :used] & (ledger_rows >= 0)])
            prepared.append((b, cand, rows, first, copies, labeled, min(cfg.label_budget, len(cand))))
        if not prepared:
            return picks_out, values
        # every env's candidate and labeled rows under its own head, in one head call
        width = max(len(p[2]) + len(p[5]) for p in prepared)
        padded = np.zeros((b_n, width), dtype=np.int64)
        valid = np.zeros((b_n, width), dtype=bool)
        for b, _cand, rows, _first, _copies, labeled, _budget in prepared:
            both = np.concatenate([rows, labeled])
            padded[b, :len(both)], valid[b, :len(both)] = both, True
        probs = self._probs(padded, valid)
        for b, cand, rows, first, copies, labeled, budget in prepared:
            m = len(rows)
            result = _badge_greedy(self.unit[rows], probs[b, :m], self.unit[labeled], probs[b, m:m + len(labeled)],
                                   copies, budget, cfg)
            chosen = result.indices[result.gains > 0]  # gains only shrink: the positive ones lead
            picks_out[b], values[b] = self._fill(cand, first[chosen], budget), result.value / len(cand)
        return picks_out, values


class BadgeLabelDualScenario(DualScenario):
    """The paper tier's DualScenario whose ``submodular`` labeler works on BADGE embeddings of the cloud network."""

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        _check_kernel(self.config)

    def _label(self, candidates: np.ndarray) -> tuple[np.ndarray, float]:
        cfg = self.config
        if cfg.labeler != "submodular" or len(candidates) == 0:
            return super()._label(candidates)
        budget = min(cfg.label_budget, len(candidates))
        rows, first, _, copies = distinct_in_upload_order(self._cloud["row"][candidates])
        probs, emb = self._cloud_view(rows)
        labeled_probs, labeled_emb = self._cloud_view(self._distinct(self._labeled_rows()))
        result = _badge_greedy(emb, probs, labeled_emb, labeled_probs, copies, budget, cfg)
        picks = first[result.indices[result.gains > 0]]
        if len(picks) < budget:  # nothing gains any more: the remaining entries in ledger order
            rest = np.setdiff1d(np.arange(len(candidates)), picks)
            picks = np.concatenate([picks, rest[:budget - len(picks)]])
        return candidates[picks], float(result.value / len(candidates))


def badge_scenario(config: Any = None, **overrides: Any):
    """The B = 1 Scenario of a dual config with the BADGE labeler, on the config's tier (what
    ``DualParallelEnv(scenario=...)`` steps)."""
    cfg = load_dual_config(config, **overrides)
    if cfg.perception.tier == "fast":
        return BatchOfOne(BadgeLabelFastDual(cfg, 1))
    return BadgeLabelDualScenario(cfg)
