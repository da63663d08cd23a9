"""Privacy filter: what may leave a robot.

Samples can carry a private flag and a private region (a box ``(top, left, bottom, right)`` in pixels, bottom and
right exclusive; ``(0, 0, H, W)`` flags the whole image). Every path by which a sample leaves a robot (a peer share
in ``p2p``, an upload in ``dual``) goes through :meth:`PrivacyFilter.apply`:

=========  ===========================================================================================
mode       effect on a private-flagged sample
=========  ===========================================================================================
``blur``   the private region is replaced by a Gaussian blur of itself and its surroundings (sigma
           ``blur_sigma`` pixels, :func:`blur_region`);
           the sample leaves, marked ``blurred``, only if the blur really changed the region (below);
           otherwise it is dropped and counted as dropped
``drop``   the sample does not leave the robot
``pass``   no filtering (the baseline that shows what the filter costs); counted as ``passed_private``
=========  ===========================================================================================

What ``blur`` guarantees, and its limits:

* Config: ``blur_sigma`` must be at least :meth:`PrivacyConfig.minimum_blur_sigma` of ``patch_size``: the sigma at
  which a unit-contrast ``patch_size`` square on a flat background keeps at most half its contrast
  (``MAX_PATCH_RESIDUAL``). Smaller values are a :class:`~datagames_env.config.ConfigError` naming the key (at
  sigma <= 0.13 a blur returns its input bit for bit). Measured minimums: patch 1 -> 0.562, 2 -> 0.845,
  3 -> 1.455, 5 -> 2.395, 8 -> 3.782. The bound holds wherever the region lies: beyond the image edge the blur
  sees the mean of the region's surroundings, not a mirror image of the region (:func:`blur_region`), so a patch
  at an edge or in a corner keeps no more of its contrast than one in the middle (a mirror kept 0.67 at an edge
  and 0.93 in a corner). A synthetic patch may not fill the image: a uniform image has nothing to blur.
* Per sample (:meth:`PrivacyFilter.apply`): a private sample leaves blurred only if its region is a non-empty
  box inside the image and the filtered region differs from the original by at least ``min_change`` (mean
  absolute change per region value; features are on a [0, 1] scale). Anything else (an empty, inverted or
  out-of-bounds box, a flat region the blur cannot change) is dropped, counted in ``n_dropped``, and its row of
  ``features`` is zeroed. ``n_blurred`` counts only samples that really changed.
* Limits: a blur hides fine detail (text, a face at this resolution), not the coarse colour or brightness of the
  region; a large, low-contrast region may pass the margin while staying recognisable. ``drop`` is the mode that
  provably sends nothing private.

:func:`stamp_private_patches` marks a random fraction of a dataset private and stamps a bright synthetic patch
(a "licence plate") into its region, so tests and demos can check that nothing private leaks.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from scipy.ndimage import gaussian_filter

from ..config import ConfigError, _Strict

FilterMode = Literal["blur", "drop", "pass"]
MAX_PATCH_RESIDUAL = 0.5  # a blurred unit patch keeps at most this much of its contrast
MIN_CHANGE = 0.05  # default margin: mean absolute change per value of a blurred region


class PrivacyConfig(_Strict):
    """Config block ``privacy`` of the scenarios that move samples between robots or to the cloud."""

    mode: FilterMode = "blur"
    blur_sigma: float = Field(3.0, gt=0.0, description="Gaussian blur width in pixels (mode 'blur')")
    min_change: float = Field(MIN_CHANGE, gt=0.0, le=1.0,
                              description="a blurred region must change by this much (mean |difference|), else the "
                                          "sample is dropped")
    private_fraction: float = Field(0.0, ge=0.0, le=1.0, description="share of samples stamped private (synthetic)")
    patch_size: int = Field(3, ge=1, description="side of the synthetic private patch, pixels")

    @model_validator(mode="after")
    def _blur_hides_the_patch(self) -> PrivacyConfig:
        needed = self.minimum_blur_sigma(self.patch_size)
        if self.mode == "blur" and self.blur_sigma < needed:
            raise ValueError(f"privacy.blur_sigma {self.blur_sigma:g} cannot hide a {self.patch_size}-pixel patch "
                             f"(it keeps more than {MAX_PATCH_RESIDUAL:.0%} of its contrast); use privacy.blur_sigma "
                             f">= {needed:.3g} or privacy.mode 'drop'")
        return self

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def minimum_blur_sigma(patch_size: int) -> float:
        """The smallest sigma (to 1e-3) at which the filter leaves at most ``MAX_PATCH_RESIDUAL`` of a unit patch
        of side ``patch_size`` on a zero background: measured with the filter itself, not a formula. Measured on a
        patch away from the edges; :func:`blur_region` keeps no more at an edge or in a corner."""
        def residual(sigma: float) -> float:
            pad = _radius(sigma) + 1  # nothing of the kernel reaches the edge: the patch lies in open space
            image = np.zeros((1, patch_size + 2 * pad, patch_size + 2 * pad))
            image[:, pad:pad + patch_size, pad:pad + patch_size] = 1.0
            box = (pad, pad, pad + patch_size, pad + patch_size)
            return float(blur_region(image, box, sigma)[:, pad:pad + patch_size, pad:pad + patch_size].max())

        low, high = 1e-3, 2.0 * patch_size
        while high - low > 1e-3:
            mid = (low + high) / 2
            low, high = (low, mid) if residual(mid) <= MAX_PATCH_RESIDUAL else (mid, high)
        return high


@dataclass(frozen=True)
class FilterResult:
    """What left. ``kept`` is a mask over the input; ``features`` holds the kept samples only in mode ``drop``,
    and one row per input sample otherwise (mode ``blur``: blurred where private, zeros where dropped); ``sent``
    is the kept samples in input order in every mode."""

    features: np.ndarray
    kept: np.ndarray
    blurred: np.ndarray  # over the input: private samples that left blurred (their region really changed)
    n_private: int
    n_dropped: int
    n_blurred: int
    n_passed_private: int

    @property
    def n_filtered(self) -> int:
        return self.n_dropped + self.n_blurred

    @property
    def dropped(self) -> np.ndarray:
        """Mask over the input: samples that did not leave."""
        return ~self.kept

    @property
    def sent(self) -> np.ndarray:
        """The features that leave, kept samples in input order (the same in every mode)."""
        return self.features if len(self.features) == self.kept.sum() else self.features[self.kept]


class PrivacyFilter:
    """Applies one filter mode to samples about to leave a robot (see the module docstring)."""

    def __init__(self, mode: FilterMode = "blur", blur_sigma: float = 3.0, min_change: float = MIN_CHANGE) -> None:
        if mode not in ("blur", "drop", "pass"):
            raise ValueError(f"privacy.mode: '{mode}' is not one of ['blur', 'drop', 'pass']")
        if not (blur_sigma > 0 and math.isfinite(blur_sigma)):
            raise ValueError(f"privacy.blur_sigma must be a finite number > 0, got {blur_sigma}")
        if not 0 < min_change <= 1:
            raise ValueError(f"privacy.min_change must be in (0, 1], got {min_change}")
        self.mode = mode
        self.blur_sigma = float(blur_sigma)
        self.min_change = float(min_change)

    @classmethod
    def from_config(cls, cfg: PrivacyConfig) -> PrivacyFilter:
        return cls(cfg.mode, cfg.blur_sigma, cfg.min_change)

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
        blurred = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(private):
            sample = self._blur_one(features[i], None if regions is None else regions[i])
            if sample is None:  # not provably hidden: nothing of it leaves
                out[i] = 0
            else:
                out[i], blurred[i] = sample, True
        kept = ~private | blurred
        n_blurred = int(blurred.sum())
        return FilterResult(out, kept, blurred, n_private, n_private - n_blurred, n_blurred, 0)

    def _blur_one(self, sample: np.ndarray, region: np.ndarray | None) -> np.ndarray | None:
        """The blurred sample, or None when its region is not a box inside the image or the blur changed it by
        less than ``min_change``."""
        if sample.ndim == 1:
            out = np.full_like(sample, sample.mean())
            changed = np.abs(out.astype(np.float64) - sample).mean()
            return out if changed >= self.min_change else None
        height, width = sample.shape[-2:]
        top, left, bottom, right = (0, 0, height, width) if region is None else (int(v) for v in region)
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            return None
        out = blur_region(sample, (top, left, bottom, right), self.blur_sigma)
        changed = np.abs(out[..., top:bottom, left:right].astype(np.float64) - sample[..., top:bottom, left:right])
        return out if changed.mean() >= self.min_change else None


def blur_region(sample: np.ndarray, region: tuple[int, int, int, int], sigma: float) -> np.ndarray:
    """``sample`` (channels, H, W) with the box ``region`` replaced by its Gaussian blur; the rest unchanged.

    Pixels inside the image are the box's real neighbours. Beyond the image edge the blur sees the mean of the
    region's surroundings (the pixels outside the box within the blur radius; the image mean if the box is the
    whole image), not a mirror image: mirroring reflects a patch at an edge into itself, and the blurred patch
    would keep up to 0.93 of its contrast in a corner. With a fill that does not depend on the box's content,
    the output in the box is linear in that content with weights >= 0 summing to at most the weights a centred
    patch gets, so a patch keeps at most what it keeps away from the edges (the measured minimum sigma)."""
    height, width = sample.shape[-2:]
    top, left, bottom, right = region
    radius = _radius(sigma)
    # only the box and its neighbours within the blur radius reach the box: blur that crop
    crop_top, crop_left = max(top - radius, 0), max(left - radius, 0)
    crop = sample[..., crop_top:min(bottom + radius, height), crop_left:min(right + radius, width)]
    box = (slice(top - crop_top, bottom - crop_top), slice(left - crop_left, right - crop_left))
    around = np.ones(crop.shape[-2:], dtype=bool)
    around[box] = False
    surroundings = crop[..., around] if around.any() else sample.reshape((*sample.shape[:-2], -1))
    fill = surroundings.astype(np.float64).mean(axis=-1)[..., None, None]
    blurred = _gaussian(crop - fill, sigma) + fill  # zero padding of (crop - fill): the image continues as fill
    out = sample.copy()
    out[..., top:bottom, left:right] = blurred[(..., *box)]
    return out


def _radius(sigma: float) -> int:
    """Half-width of scipy's Gaussian kernel (``truncate`` 4)."""
    return int(4.0 * float(sigma) + 0.5)


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur the last two (spatial) axes only; zero beyond the edges."""
    return gaussian_filter(image, sigma=(0,) * (image.ndim - 2) + (sigma, sigma), mode="constant", cval=0.0)


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
    if patch_size >= min(height, width):  # a patch that fills the image is uniform: no blur changes it
        raise ConfigError(f"privacy.patch_size {patch_size} must be smaller than the image side "
                          f"({height}x{width}): a patch that fills the image cannot be blurred")
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
