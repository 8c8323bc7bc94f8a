"""Model registry (timm-style ``@register``) and the normalising classifier wrapper."""

from repurify.models import imagenet as _imagenet  # noqa: F401  (registers the architectures)
from repurify.models import mnist as _mnist  # noqa: F401
from repurify.models import resnet as _resnet  # noqa: F401
from repurify.models.classifier import (
    Classifier,
    build_classifier,
    load_classifier,
    save_classifier,
)
from repurify.models.registry import MODELS, build_model, register

__all__ = ["MODELS", "Classifier", "build_classifier", "build_model", "load_classifier", "register",
           "save_classifier"]
