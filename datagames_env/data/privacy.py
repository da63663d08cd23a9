"""Privacy filter: what may leave a robot.

Samples can carry a private flag and a private region (a box ``(top, left, bottom, right)`` in pixels, bottom and
right exclusive; ``(0, 0, H, W)`` flags the whole image). Every path by which a sample leaves a robot (a peer share
in ``p2p``, an upload in ``dual``) goes through :meth:`PrivacyFilter.apply`:

=========  ===========================================================================================
mode       effect on a private-flagged sample
=========  ===========================================================================================
``blur``   the private region is replaced by a Gaussian blur of itself (sigma ``blur_sigma`` pixels);
           the sample leaves, marked ``blurred``
``drop``   the sample does not leave the robot
``pass``   no filtering (the baseline that shows what the filter costs); counted as ``passed_private``
=========  ===========================================================================================

:func:`stamp_private_patches` marks a random fraction of a dataset private and stamps a bright synthetic patch
(a "licence plate") into its region, so tests and demos can check that nothing private leaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.ndimage import gaussian_filter

FilterMode = Literal["blur", "drop", "pass"]


class PrivacyConfig(BaseModel):
    """Config block ``privacy`` of the scenarios that move samples between robots or to the cloud."""

    model_config = ConfigDict(extra="forbid")

    mode: FilterMode = "blur"
    blur_sigma: float = Field(3.0, gt=0.0, description="Gaussian blur width in pixels (mode 'blur')")
    private_fraction: float = Field(0.0, ge=0.0, le=1.0, description="share of samples stamped private (synthetic)")
    patch_size: int = Field(3, ge=1, description="side of the synthetic private patch, pixels")


@dataclass(frozen=True)
class FilterResult:
    """What left: ``features`` of the kept samples (blurred where private), ``kept`` a mask over the input."""

    features: np.ndarray
    kept: np.ndarray
    blurred: np.ndarray  # over the input: private samples that left blurred
    n_private: int
    n_dropped: int
    n_blurred: int
    n_passed_private: int

    @property
    def n_filtered(self) -> int:
        return self.n_dropped + self.n_blurred


class PrivacyFilter:
    """Applies one filter mode to samples about to leave a robot (see the module docstring)."""

    def __init__(self, mode: FilterMode = "blur", blur_sigma: float = 3.0) -> None:
        if mode not in ("blur", "drop", "pass"):
            raise ValueError(f"privacy.mode: '{mode}' is not one of ['blur', 'drop', 'pass']")
        if not blur_sigma > 0:
            raise ValueError(f"privacy.blur_sigma must be > 0, got {blur_sigma}")
        self.mode = mode
        self.blur_sigma = float(blur_sigma)

    @classmethod
    def from_config(cls, cfg: PrivacyConfig) -> PrivacyFilter:
        return cls(cfg.mode, cfg.blur_sigma)

    def apply(self, features: np.ndarray, private: np.ndarray, regions: np.ndarray | None = None) -> FilterResult:
        """Filter a batch: ``features`` (n, channels, H, W) images or (n, d) vectors, ``private`` (n,) bool,
        ``regions`` (n, 4) int boxes (None: the whole sample). Vectors cannot be blurred by region: a private
        vector is blurred as a whole in mode ``blur`` (replaced by its mean), dropped in ``drop``."""
        features = np.asarray(features)
        private = np.asarray(private, dtype=bool)
        n = len(features)
        if private.shape != (n,):
            raise ValueError(f"privacy filter: private flags have shape {private.shape}, expected ({n},) "
                             f"for features of shape {features.shape}")
        if regions is not None:
            regions = np.asarray(regions)
            if regions.shape != (n, 4):
                raise ValueError(f"privacy filter: regions have shape {regions.shape}, expected ({n}, 4)")
        n_private = int(private.sum())
        none = np.zeros(n, dtype=bool)
        if self.mode == "pass" or n_private == 0:
            return FilterResult(features, np.ones(n, dtype=bool), none, n_private, 0, 0,
                                n_private if self.mode == "pass" else 0)
        if self.mode == "drop":
            kept = ~private
            return FilterResult(features[kept], kept, none, n_private, n_private, 0, 0)
        out = features.copy()
        for i in np.flatnonzero(private):
            out[i] = self._blur_one(out[i], None if regions is None else regions[i])
        return FilterResult(out, np.ones(n, dtype=bool), private.copy(), n_private, 0, n_private, 0)

    def _blur_one(self, sample: np.ndarray, region: np.ndarray | None) -> np.ndarray:
        if sample.ndim == 1:
            return np.full_like(sample, sample.mean())
        top, left, bottom, right = (0, 0, sample.shape[-2], sample.shape[-1]) if region is None else region
        # Blur the whole image and paste back the region, so edges of the box see real neighbours.
        blurred = gaussian_filter(sample, sigma=(0,) * (sample.ndim - 2) + (self.blur_sigma, self.blur_sigma))
        sample = sample.copy()
        sample[..., top:bottom, left:right] = blurred[..., top:bottom, left:right]
        return sample


def stamp_private_patches(features: np.ndarray, fraction: float, rng: np.random.Generator,
                          patch_size: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mark ``fraction`` of the images private and stamp a bright ``patch_size`` square at a random place.

    Returns ``(features_with_patches, private (n,) bool, regions (n, 4) int)``; regions of public samples are
    zero boxes. ``features`` must be (n, channels, H, W) images.
    """
    if features.ndim != 4:
        raise ValueError(f"stamp_private_patches needs (n, channels, H, W) images, got shape {features.shape}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"privacy.private_fraction must be in [0, 1], got {fraction}")
    n, _, height, width = features.shape
    if patch_size > min(height, width):
        raise ValueError(f"privacy.patch_size {patch_size} exceeds the image size {height}x{width}")
    private = rng.random(n) < fraction
    regions = np.zeros((n, 4), dtype=np.int64)
    out = features.copy()
    idx = np.flatnonzero(private)
    tops = rng.integers(0, height - patch_size + 1, size=len(idx))
    lefts = rng.integers(0, width - patch_size + 1, size=len(idx))
    for i, top, left in zip(idx, tops, lefts):
        out[i, :, top:top + patch_size, left:left + patch_size] = 1.0
        regions[i] = (top, left, top + patch_size, left + patch_size)
    return out, private, regions
