"""PPO learner used by every RLlib training here: advantages standardised over real (loss-masked) rows only.

RLlib's new API stack (checked on 2.40-2.60; upstream ray-project/ray issue 57989, fix PR 63900 not released in
2.60) appends one artificial bootstrap step per episode (``AddOneTsToEpisodesAndTruncate``, loss mask False) and
then :class:`GeneralAdvantageEstimation` takes the mean and std of the advantages over *all* rows, those included.
With 10-round episodes that is 1 row in 11, and those rows' raw advantages are large (+1.4 to +2.4 against a
real-row std of 0.15 to 0.67 measured here), so every real action gets the same push down and the policy stays at
maximum entropy. The reported ``vf_explained_var`` has the same flaw.

Standardisation is affine, so standardising RLlib's already standardised advantages again over the masked rows
gives exactly the masked standardisation of the raw ones: the fix is a few lines after RLlib's own connector and
stays correct if a later RLlib version already masks (then it is a no-op up to round-off).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo.ppo import LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

_EPS = 1e-4  # RLlib's floor on the advantage std


def masked_standardize(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` standardised with the mean and std of ``values[mask]``; unmasked rows are shifted alike (the
    loss ignores them)."""
    real = values[mask]
    if real.numel() < 2:
        return values - (real.mean() if real.numel() else 0.0)
    return (values - real.mean()) / torch.clamp(real.std(unbiased=False), min=_EPS)


def masked_explained_variance(targets: torch.Tensor, predictions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RLlib's ``max(-1, 1 - Var(y - pred) / Var(y))`` over the masked rows only."""
    y, pred = targets[mask].reshape(-1), predictions[mask].reshape(-1)
    return torch.clamp(1.0 - torch.var(y - pred) / (torch.var(y) + 1e-8), min=-1.0)


class MaskedGeneralAdvantageEstimation(GeneralAdvantageEstimation):
    """RLlib's GAE, then the advantages standardised over loss-masked rows only."""

    def __call__(self, *, rl_module, episodes, batch: dict[str, Any], **kwargs):
        batch = super().__call__(rl_module=rl_module, episodes=episodes, batch=batch, **kwargs)
        for module_batch in batch.values():
            if Postprocessing.ADVANTAGES not in module_batch or Columns.LOSS_MASK not in module_batch:
                continue
            advantages = torch.as_tensor(module_batch[Postprocessing.ADVANTAGES])
            mask = torch.as_tensor(module_batch[Columns.LOSS_MASK], device=advantages.device).bool()
            if mask.shape == advantages.shape:
                module_batch[Postprocessing.ADVANTAGES] = masked_standardize(advantages, mask)
        return batch


class MaskedPPOTorchLearner(PPOTorchLearner):
    """``PPOTorchLearner`` with :class:`MaskedGeneralAdvantageEstimation` in place of RLlib's GAE piece and the
    explained variance reported over real rows. Set with ``PPOConfig().training(learner_class=...)``."""

    def build(self) -> None:
        super().build()
        pipeline = self._learner_connector
        if pipeline is None:
            return
        for index, piece in enumerate(pipeline.connectors):
            if type(piece) is GeneralAdvantageEstimation:
                pipeline.connectors[index] = MaskedGeneralAdvantageEstimation(gamma=piece.gamma, lambda_=piece.lambda_)

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        if Columns.LOSS_MASK in batch and config.use_critic:
            module = self.module[module_id].unwrapped()
            with torch.no_grad():
                values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
                explained = masked_explained_variance(batch[Postprocessing.VALUE_TARGETS], values,
                                                      batch[Columns.LOSS_MASK].bool())
            # logged after RLlib's own value under the same key with window 1: the masked one is what is reported
            self.metrics.log_value((module_id, LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY), explained, window=1)
        return loss
