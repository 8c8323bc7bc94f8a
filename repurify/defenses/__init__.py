"""Defenses: the purifier interface, BPDA/EOT, and a factory from params."""

from __future__ import annotations

from repurify.defenses.base import EOT, DefendedModel, Identity, Purifier, bpda, nondifferentiable
from repurify.defenses.baselines import BitDepth, Jpeg, MedianFilter

__all__ = ["EOT", "DefendedModel", "Identity", "Purifier", "bpda", "build_purifier",
           "nondifferentiable"]


def build_purifier(spec) -> Purifier:
    """Instantiate the purifier a ``profiles.<p>.defenses.<name>`` entry describes."""
    if spec.kind == "none":
        return Identity()
    if spec.kind == "jpeg":
        return Jpeg(spec.quality)
    if spec.kind == "bit_depth":
        return BitDepth(spec.bits)
    if spec.kind == "median_filter":
        return MedianFilter(spec.kernel)
    raise KeyError(f"no purifier for defense kind {spec.kind!r}")
