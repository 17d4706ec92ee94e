"""Objectives: what gradient ascent maximises, as functions of layer activations.

An :class:`Objective` maps the captured activations of one forward pass (a dict
``layer -> (B, C, H, W)`` or ``(B, C)`` tensor) to one value per batch item,
shape ``(B,)``. Items never mix (except in :func:`diversity`, whose purpose is
to compare them), so one batch can optimise many units at once: the loss is the
sum over items, and each item's gradient only comes from its own value.

Objectives combine like numbers: ``a + b``, ``a - b``, ``2 * a``, ``a / 2``,
``-a``; ``sum([a, b])`` works too. :func:`parse` reads short strings such as
``"blocks.4.0:12"``.

References: Erhan et al. 2009 (activation maximisation); Olah et al.,
"Feature Visualization", Distill 2017 (objectives, diversity);
Mordvintsev et al. 2015 (DeepDream, the ``layer`` objective).
"""
from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

import torch

Acts = Mapping[str, torch.Tensor]
Index = int | Sequence[int]


class Objective:
    """A differentiable ``acts -> (B,)`` function over the activations of ``layers``.

    Args:
        fn: maps the activations dict to per-item values.
        layers: the layer names ``fn`` reads (the forward pass may stop once all fired).
        desc: a short description, recorded with results.
    """

    def __init__(self, fn: Callable[[Acts], torch.Tensor], layers: Sequence[str], desc: str):
        self.fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.desc = desc

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return self.desc

    # ----------------------------------------------------------- arithmetic
    def __add__(self, other: "Objective | float") -> "Objective":
        if isinstance(other, Objective):
            return Objective(lambda a: self(a) + other(a), self.layers + other.layers,
                             f"{self.desc} + {other.desc}")
        if isinstance(other, (int, float)):
            c = float(other)
            return Objective(lambda a: self(a) + c, self.layers, f"{self.desc} + {c:g}")
        return NotImplemented

    def __radd__(self, other: float) -> "Objective":
        if isinstance(other, (int, float)) and other == 0:
            return self  # so that sum([...]) works
        return self.__add__(other)

    def __neg__(self) -> "Objective":
        return Objective(lambda a: -self(a), self.layers, f"-({self.desc})")

    def __sub__(self, other: "Objective | float") -> "Objective":
        if isinstance(other, (Objective, int, float)):
            return self + (-other)
        return NotImplemented

    def __rsub__(self, other: float) -> "Objective":
        return (-self) + other

    def __mul__(self, k: float) -> "Objective":
        if not isinstance(k, (int, float)):
            return NotImplemented
        k = float(k)
        return Objective(lambda a: k * self(a), self.layers, f"{k:g} * ({self.desc})")

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> "Objective":
        if not isinstance(k, (int, float)):
            return NotImplemented
        return self * (1.0 / float(k))


def _per_item(values: torch.Tensor, index: Index) -> torch.Tensor:
    """Pick ``values[b, index[b]]`` from ``(B, C)``; an int index picks the same column for all."""
    if isinstance(index, int):
        return values[:, index]
    idx = torch.as_tensor(list(index), device=values.device, dtype=torch.long)
    if idx.numel() != values.shape[0]:
        raise ValueError(f"{idx.numel()} channel indices for a batch of {values.shape[0]}")
    return values.gather(1, idx[:, None]).squeeze(1)


def _idx_desc(index: Index) -> str:
    if isinstance(index, int):
        return str(index)
    index = list(index)
    return str(index[0]) if len(set(index)) == 1 else "[" + ",".join(map(str, index)) + "]"


def channel(layer: str, index: Index) -> Objective:
    """Mean activation of channel ``index`` over all positions.

    ``index`` is one channel for every batch item, or one per item (a batch of units).
    """
    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer]
        means = a.flatten(2).mean(-1) if a.dim() > 2 else a
        return _per_item(means, index)

    return Objective(fn, [layer], f"channel {layer}:{_idx_desc(index)}")


def neuron(layer: str, index: Index, y: int | None = None, x: int | None = None) -> Objective:
    """Activation of channel ``index`` at one position (default: the centre of the map)."""
    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer]
        if a.dim() > 2:
            h, w = a.shape[-2:]
            a = a[:, :, h // 2 if y is None else y, w // 2 if x is None else x]
        return _per_item(a, index)

    where = "centre" if y is None and x is None else f"y={y},x={x}"
    return Objective(fn, [layer], f"neuron {layer}:{_idx_desc(index)} @{where}")


def layer(layer: str) -> Objective:
    """DeepDream: the mean of squared activations over channels and positions."""
    def fn(acts: Acts) -> torch.Tensor:
        return acts[layer].pow(2).flatten(1).mean(1)

    return Objective(fn, [layer], f"layer {layer}")


def direction(layer: str, vector: torch.Tensor | Sequence[float]) -> Objective:
    """Dot product of each position's channel vector with ``vector``, averaged over positions.

    ``vector`` is ``(C,)`` for every item or ``(B, C)``, one direction per item.
    """
    vec = torch.as_tensor(vector, dtype=torch.float32)

    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer]
        v = vec.to(device=a.device, dtype=a.dtype)
        v = v.expand(a.shape[0], -1) if v.dim() == 1 else v
        flat = a.flatten(2) if a.dim() > 2 else a[:, :, None]
        return torch.einsum("bcn,bc->bn", flat, v).mean(1)

    return Objective(fn, [layer], f"direction {layer} ({vec.shape[-1]} channels)")


def direction_cosine(layer: str, vector: torch.Tensor | Sequence[float], power: float = 1.0,
                     floor: float = 0.1) -> Objective:
    """The direction objective weighted by cosine similarity, as in activation atlases.

    Per position ``dot(a, v) * max(cos(a, v), floor) ** power``, averaged over positions: a large
    dot product alone can come from a vector pointing elsewhere with a large norm; the cosine term
    rewards pointing *along* ``v`` (Carter et al., "Activation Atlas", Distill 2019,
    https://distill.pub/2019/activation-atlas/). ``vector`` is ``(C,)`` or ``(B, C)``.
    """
    vec = torch.as_tensor(vector, dtype=torch.float32)

    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer]
        v = vec.to(device=a.device, dtype=a.dtype)
        v = v.expand(a.shape[0], -1) if v.dim() == 1 else v
        flat = a.flatten(2) if a.dim() > 2 else a[:, :, None]
        dot = torch.einsum("bcn,bc->bn", flat, v)
        cos = dot / (flat.norm(dim=1) * v.norm(dim=1, keepdim=True) + 1e-8)
        return (dot * cos.clamp_min(floor).pow(power)).mean(1)

    return Objective(fn, [layer], f"direction·cos^{power:g} {layer} ({vec.shape[-1]} channels)")


def gram(a: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``(B, C, C)`` of ``(B, C, H, W)`` activations, divided by ``H * W``."""
    flat = a.flatten(2)
    return flat @ flat.transpose(1, 2) / flat.shape[-1]


def diversity(layer: str, groups: Sequence[object] | None = None) -> Objective:
    """Minus the mean cosine similarity of an item's Gram matrix to the others in its group.

    Olah et al. 2017 ("Diversity"): summed over items this is the negative
    pairwise cosine similarity of Gram matrices across the batch (divided by
    the group size minus one). ``groups`` gives each item's group (e.g. its
    channel), so several channels in one batch only push apart images of the
    same channel; by default all items are one group.
    """
    def fn(acts: Acts) -> torch.Tensor:
        a = acts[layer]
        b = a.shape[0]
        g = torch.nn.functional.normalize(gram(a).flatten(1), dim=1)
        sim = g @ g.T
        if groups is None:
            same = torch.ones(b, b, dtype=torch.bool, device=a.device)
        else:
            if len(groups) != b:
                raise ValueError(f"{len(groups)} group labels for a batch of {b}")
            ids = {k: i for i, k in enumerate(dict.fromkeys(groups))}
            gid = torch.tensor([ids[k] for k in groups], device=a.device)
            same = gid[:, None] == gid[None, :]
        same &= ~torch.eye(b, dtype=torch.bool, device=a.device)
        n = same.sum(1).clamp(min=1)
        return -(sim * same).sum(1) / n

    return Objective(fn, [layer], f"diversity {layer}")


KINDS = ("channel", "neuron", "layer")
_TERM = re.compile(r"^(?:(?P<k>[0-9.eE+]+)\s*\*\s*)?(?P<kind>channel:|neuron:|layer:|deepdream:)?(?P<body>\S+)$")


def _parse_term(text: str) -> Objective:
    m = _TERM.match(text.strip())
    if not m:
        raise ValueError(f"cannot parse objective term {text!r}")
    kind = (m.group("kind") or "").rstrip(":")
    body = m.group("body")
    if kind in ("layer", "deepdream"):
        obj = layer(body)
    else:
        parts = body.split(":")
        if len(parts) < 2 or not all(p.lstrip("-").isdigit() for p in parts[1:]):
            raise ValueError(f"objective {text!r} needs LAYER:CHANNEL (e.g. blocks.4.0:12)")
        name, nums = parts[0], [int(p) for p in parts[1:]]
        if kind == "neuron":
            if len(nums) not in (1, 3):
                raise ValueError(f"neuron objective {text!r}: use neuron:LAYER:CHANNEL[:Y:X]")
            obj = neuron(name, nums[0], *(nums[1:] or [None, None]))
        else:
            if len(nums) != 1:
                raise ValueError(f"channel objective {text!r}: use LAYER:CHANNEL")
            obj = channel(name, nums[0])
    if m.group("k"):
        obj = float(m.group("k")) * obj
    return obj


def parse(spec: str | Objective) -> Objective:
    """Read an objective from a short string.

    Grammar: terms joined by `` + `` or `` - `` (spaces around the sign), an
    optional leading ``-``; each term is ``[K*][kind:]BODY`` where kind is
    ``channel`` (the default; BODY ``LAYER:CH``), ``neuron`` (``LAYER:CH[:Y:X]``)
    or ``layer``/``deepdream`` (``LAYER``). Examples: ``"blocks.4.0:12"``,
    ``"-blocks.4.0:12"``, ``"neuron:blocks.4.0:12:3:3"``,
    ``"blocks.4.0:12 - 0.5*blocks.4.0:3"``, ``"layer:blocks.3.0"``.
    """
    if isinstance(spec, Objective):
        return spec
    text = spec.strip()
    if not text:
        raise ValueError("empty objective")
    tokens = re.split(r"\s+([+-])\s+", text)
    sign, first = 1.0, tokens[0]
    if first.startswith("-"):
        sign, first = -1.0, first[1:]
    total = _parse_term(first)
    total = -total if sign < 0 else total
    for op, term in zip(tokens[1::2], tokens[2::2]):
        total = total + _parse_term(term) if op == "+" else total - _parse_term(term)
    return total
