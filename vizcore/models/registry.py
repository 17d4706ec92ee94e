"""The model registry: one record per architecture, after timm's ``@register_model``.

Each :class:`ModelSpec` keeps, beside its builder, everything that is data rather
than code: preprocessing, class names, weight sources with provenance, and the
curated layer taps worth visualising. Nothing here loads weights; see
:mod:`vizcore.models.loading`.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnknownModelError(KeyError):
    """Raised for a model name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


class UnknownLayerError(KeyError):
    """Raised for a layer name that is neither a tap nor a module of the model."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, centre-crop, normalise (torchvision's recipe)."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def transform(self):
        """A PIL-image-to-tensor callable: ``(3, crop, crop)`` float32, normalised."""
        from torchvision import transforms as T

        interp = T.InterpolationMode(self.interpolation)
        return T.Compose(
            [
                T.Resize(self.resize, interpolation=interp, antialias=True),
                T.CenterCrop(self.crop),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def to_json(self) -> dict:
        return {
            "resize": self.resize,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


@dataclass(frozen=True)
class WeightSource:
    """One place pretrained weights can come from.

    ``kind`` is ``"package"`` (a pip package that ships the file; ``locate``
    returns its path or ``None``) or ``"url"`` (downloaded into the torch hub
    cache as ``filename``). ``convert`` maps a foreign state dict onto the
    architecture's keys.
    """

    kind: str
    description: str
    url: str | None = None
    filename: str | None = None
    locate: Callable[[], str | None] | None = None
    convert: Callable[[dict, nn.Module], dict] | None = None
    check_hash: bool = False


@dataclass(frozen=True)
class Tap:
    """A named layer worth visualising: ``name`` (e.g. ``conv5_3``) and its module path."""

    name: str
    module: str
    kind: str = "block"


@dataclass(frozen=True)
class ModelSpec:
    """Everything the engine knows about one architecture."""

    name: str
    family: str
    builder: Callable[[], nn.Module]
    taps: Callable[[nn.Module], list[Tap]]
    preprocess: Preprocess = Preprocess()
    weights: tuple[WeightSource, ...] = ()
    categories: Callable[[], Sequence[str]] | None = None
    ignore_keys: tuple[str, ...] = ()
    paper: str = ""
    description: str = ""
    imagenet_head: bool = True
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def input_size(self) -> int:
        return self.preprocess.crop


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec; a duplicate name is an error (as in torchvision)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


_FAMILIES: dict[str, Callable[[str], ModelSpec]] = {}
"""Name prefixes that stand for a whole family of models built on demand (``timm/``)."""


def register_family(prefix: str, spec_of: Callable[[str], ModelSpec]) -> None:
    """Let every name ``<prefix><rest>`` resolve to ``spec_of(rest)`` (the zoo registers ``timm/``).

    Builders register themselves beside their definitions (``vizcore.models.zoo``, imported by
    the package), so this module never imports them back."""
    if prefix in _FAMILIES:
        raise ValueError(f"model family {prefix!r} is registered twice")
    _FAMILIES[prefix] = spec_of


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, in registry order."""
    return [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)]


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model, or of any timm model as ``timm/<name>``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for prefix, spec_of in _FAMILIES.items():
        if name.startswith(prefix):
            return spec_of(name[len(prefix):])
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Run `python -m vizcore models` for the list, "
        "or use timm/<name> for any timm model."
    )


def close_names(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The valid names nearest to ``name``, for error messages."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.4)
