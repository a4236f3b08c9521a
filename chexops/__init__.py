"""chexops: chest X-ray transfer-learning studies as a tracked, reproducible pipeline.

A plugin imports only this package: `chexops.hookimpl` and the spec classes it registers.
"""

from chexops.components.hookspecs import hookimpl
from chexops.components.specs import FamilySpec, InitializerSpec, InitReport, LabelPolicySpec, TruncationSpec
from chexops.errors import (
    BuildError,
    ChexopsError,
    ConfigError,
    DataError,
    PluginError,
    UnknownComponentError,
    WeightsError,
)


def build_model(*args, **kwargs):  # noqa: ANN002, ANN003 - a lazy alias: importing chexops must not import torch
    """See chexops.models.build.build_model."""
    from chexops.models.build import build_model as _build

    return _build(*args, **kwargs)


__all__ = [
    "BuildError",
    "ChexopsError",
    "ConfigError",
    "DataError",
    "FamilySpec",
    "InitReport",
    "InitializerSpec",
    "LabelPolicySpec",
    "PluginError",
    "TruncationSpec",
    "UnknownComponentError",
    "WeightsError",
    "build_model",
    "hookimpl",
]
