"""Concept relevance: where in an image a channel supports a class, and the images where it matters most.

After Achtibat et al., "From attribution maps to human-understandable explanations through
Concept Relevance Propagation" (Nature Machine Intelligence 2023,
https://doi.org/10.1038/s42256-023-00711-8), through zennit-crp 0.6.0 (``crp.attribution.CondAttribution``)
on the LRP copy of :mod:`vizcore.evidence.lrp` (same composites and canonizers):

- :func:`channel_relevance`: the LRP relevance of class ``y`` reaching each channel of a tap
  (its *share*), the unconditional LRP map, and the *conditional* heatmaps of the top
  channels: the input relevance that flows through channel ``c`` alone. Relevance is
  linear in the relevance it starts from, so the conditional heatmaps of all channels of a
  layer add up to the unconditional heatmap (``exclude_parallel=False``: every path counts).
- :class:`RelMaxPass` / :class:`RelMaxJob`: CRP's *RelMax* reference images. For every channel,
  the ``k`` images of a dataset with the largest relevance of the channel for the model's own
  prediction (only positive relevance counts), beside the ``k`` with the largest activation,
  as a dataset pass whose merge is an exact top-k (value, then image index), so it runs in
  batches, resumes and runs on Ray like mining.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from vizcore.jobs import PassJob
from vizcore.models import LoadedModel
from vizcore.passes import DatasetPass, PassInfo

NO_IMAGE = -1


def _module_of(lm: LoadedModel, layer: str) -> tuple[str, str]:
    """``(tap name, module path)`` of a tap name or module path."""
    from vizcore.evidence import layer_tap

    t, _ = layer_tap(lm, layer)
    return t.name, t.module


def _default_layer(lm: LoadedModel) -> str:
    from vizcore.evidence.attribution import default_layer

    return default_layer(lm)


def _leaf(x: torch.Tensor) -> torch.Tensor:
    """CRP takes the gradient of the input: a fresh leaf that requires it."""
    return x.detach().clone().requires_grad_(True)


def _attribution(model):
    from crp.attribution import CondAttribution

    return CondAttribution(model, no_param_grad=True)


# ------------------------------------------------------------------ one image
@dataclass(frozen=True, eq=False)
class ChannelRelevance:
    """Class ``target``'s LRP relevance at each channel of one tap, with conditional heatmaps.

    Attributes:
        layer, module: the tap's name and module path.
        target: ``{"index", "label"}``.
        relevance: ``(C,)`` relevance reaching each channel (summed over positions).
        heatmap: ``(H, W)`` the unconditional LRP map (summed over colour channels).
        channels: the channels shown, most relevant first.
        conditional: ``{channel: (H, W)}`` each shown channel's conditional heatmap.
        logit: the class logit; composite: the LRP rules used.
    """

    layer: str
    module: str
    target: dict
    relevance: np.ndarray
    heatmap: np.ndarray
    channels: list[int]
    conditional: dict[int, np.ndarray]
    logit: float
    composite: str
    image: Image.Image | None = None

    @property
    def total(self) -> float:
        return float(self.relevance.sum())

    def share(self, c: int) -> float:
        """Channel ``c``'s part of the relevance at this layer (all channels: 1)."""
        t = self.total
        return float(self.relevance[c] / t) if t else 0.0

    def to_json(self) -> dict:
        return {"layer": self.layer, "module": self.module, "target": self.target, "composite": self.composite,
                "logit": round(self.logit, 6), "total": round(self.total, 6), "n_channels": int(self.relevance.size),
                "channels": [{"channel": c, "relevance": round(float(self.relevance[c]), 6),
                              "share": round(self.share(c), 6)} for c in self.channels]}


def conditional_heatmaps(lm: LoadedModel, x: torch.Tensor, target: int, layer: str, channels: Sequence[int], *,
                         composite: str = "epsilon", batch: int = 16) -> np.ndarray:
    """``(len(channels), H, W)``: for each channel of ``layer``, the input relevance of class ``target``
    that flows through that channel alone (CRP's conditional heatmap, summed over colour channels)."""
    from vizcore.evidence.lrp import model_composite, private_copy

    _, module = _module_of(lm, layer)
    model, lock = private_copy(lm)
    out = []
    with lock:
        att = _attribution(model)
        chans = [int(c) for c in channels]
        for s in range(0, len(chans), batch):
            chunk = chans[s:s + batch]
            xb = x.expand(len(chunk), *x.shape[1:])
            comp = model_composite(lm, model, xb, composite)
            res = att(_leaf(x), [{"y": [int(target)], module: [c]} for c in chunk], comp, exclude_parallel=False)
            out.append(res.heatmap.detach().float().cpu().numpy())
    return np.concatenate(out, 0) if out else np.zeros((0, *x.shape[-2:]), np.float32)


def channel_relevance(lm: LoadedModel, image: Image.Image | torch.Tensor, target: int | str | None = None,
                      layer: str | None = None, *, k: int = 6, composite: str = "epsilon") -> ChannelRelevance:
    """Each channel's relevance for ``target`` at ``layer`` (default: the Grad-CAM layer's tap) and the
    conditional heatmaps of the ``k`` most relevant channels.

    Args:
        lm: a loaded model (shared; LRP runs on its private copy).
        image: a PIL image or a preprocessed ``(1, 3, H, W)`` tensor.
        target: class index, label, or ``top1``/``None``.
        layer: a tap name or module path.
        k: how many channels get a conditional heatmap.
        composite: the LRP rules (:data:`vizcore.evidence.lrp.COMPOSITES`).
    """
    from vizcore.activations import denormalize, preprocess
    from vizcore.evidence import resolve_target
    from vizcore.evidence.lrp import model_composite, private_copy

    x = image if torch.is_tensor(image) else preprocess(lm, image)
    x = (x if x.dim() == 4 else x[None]).to(lm.device)
    name, module = _module_of(lm, layer or _default_layer(lm))
    model, lock = private_copy(lm)
    with lock:
        with torch.no_grad():
            logits = model(x)
        tgt = resolve_target(lm, target, logits)
        att = _attribution(model)
        res = att(_leaf(x), [{"y": [tgt.index]}], model_composite(lm, model, x, composite), record_layer=[module],
                  exclude_parallel=False)
    rel_map = res.relevances[module][0].detach().float().cpu()
    rel = rel_map.flatten(1).sum(1).numpy() if rel_map.dim() > 1 else rel_map.numpy()
    top = [int(c) for c in np.argsort(-rel, kind="stable")[:k]]
    cond = conditional_heatmaps(lm, x, tgt.index, module, top, composite=composite) if top else []
    return ChannelRelevance(name, module, tgt.to_json(), rel.astype(np.float64),
                            res.heatmap[0].detach().float().cpu().numpy(), top,
                            {c: cond[i] for i, c in enumerate(top)}, float(logits[0, tgt.index]), composite,
                            denormalize(lm, x[0]))


# ------------------------------------------------------------------ RelMax over a dataset
def _topk(v: torch.Tensor, i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of each row of ``(C, n)`` candidates by value (desc), then image index (asc); padded
    with ``(-inf, NO_IMAGE)``. Depends only on the set of candidates: an exact, associative merge.
    (Written here, not imported from mining, whose helper is private to it.)"""
    o = i.argsort(dim=1, stable=True)
    v, i = v.gather(1, o), i.gather(1, o)
    o = v.argsort(dim=1, descending=True, stable=True)[:, :k]
    v, i = v.gather(1, o), i.gather(1, o)
    if v.shape[1] < k:
        pad = k - v.shape[1]
        v = torch.cat([v, v.new_full((v.shape[0], pad), float("-inf"))], 1)
        i = torch.cat([i, i.new_full((i.shape[0], pad), NO_IMAGE)], 1)
    return v, i


@dataclass(frozen=True, eq=False)
class RelMaxResult:
    """Per channel of one tap: the images ranked by relevance and by activation.

    Attributes:
        rel_values, rel_images: ``(C, k)`` the largest relevances of each channel for the model's
            prediction on each image, and the dataset indices of those images (``-1``: none).
        act_values, act_images: ``(C, k)`` the same by the channel's largest activation.
        n_images: images seen; complete: the whole dataset.
    """

    model: str
    layer: str
    module: str
    k: int
    composite: str
    rel_values: np.ndarray
    rel_images: np.ndarray
    act_values: np.ndarray
    act_images: np.ndarray
    n_images: int
    files: list[str] = field(default_factory=list)
    complete: bool = True

    def relevance_ranked(self, channel: int) -> list[tuple[int, float]]:
        """``(image index, relevance)`` of the images where ``channel`` has positive relevance, most first."""
        return [(int(i), float(v)) for v, i in zip(self.rel_values[channel], self.rel_images[channel])
                if i != NO_IMAGE and v > 0]

    def activation_ranked(self, channel: int) -> list[tuple[int, float]]:
        """``(image index, activation)`` of the images where ``channel`` is most active, most first."""
        return [(int(i), float(v)) for v, i in zip(self.act_values[channel], self.act_images[channel])
                if i != NO_IMAGE]

    def to_json(self) -> dict:
        return {"model": self.model, "layer": self.layer, "module": self.module, "k": self.k,
                "composite": self.composite, "n_images": self.n_images, "complete": self.complete,
                "n_channels": int(self.rel_values.shape[0])}


class RelMaxPass(DatasetPass):
    """CRP's RelMax for every channel of one tap: per batch, the relevance of each channel for the
    model's top-1 class on each image (CRP, LRP composite on the private copy) and the channel's
    largest activation; state: per channel the top-``k`` of each; merge: exact top-k."""

    kind = "relmax"

    def __init__(self, lm: LoadedModel, layer: str, k: int = 8, composite: str = "epsilon"):
        super().__init__({"model": lm})
        self.layer, self.module = _module_of(lm, layer)
        self.k, self.composite = int(k), composite

    def transform(self):
        return self.model("model").transform()

    def empty(self):
        return None

    def step(self, x, indices: Sequence[int]):
        from vizcore.evidence.lrp import model_composite, private_copy

        lm = self.model("model")
        x = x.to(lm.device)
        model, lock = private_copy(lm)
        with lock:
            with torch.no_grad():
                preds = model(x).argmax(1)
            att = _attribution(model)
            res = att(_leaf(x), [{"y": [int(p)]} for p in preds], model_composite(lm, model, x, self.composite),
                      record_layer=[self.module], exclude_parallel=False)
        rel = res.relevances[self.module].detach().float().cpu()
        act = res.activations[self.module].detach().float().cpu()
        rel = rel.flatten(2).sum(2) if rel.dim() > 2 else rel
        act = act.flatten(2).amax(2) if act.dim() > 2 else act
        idx = torch.as_tensor([int(i) for i in indices], dtype=torch.long).expand(rel.shape[1], -1)
        return {"rel": _topk(rel.T.contiguous(), idx, self.k), "act": _topk(act.T.contiguous(), idx, self.k),
                "n": len(indices)}

    def merge(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return {key: _topk(torch.cat([a[key][0], b[key][0]], 1), torch.cat([a[key][1], b[key][1]], 1), self.k)
                for key in ("rel", "act")} | {"n": a["n"] + b["n"]}

    def finish(self, state, info: PassInfo) -> RelMaxResult:
        lm = self.model("model")
        if state is None:
            z = np.zeros((0, self.k))
            return RelMaxResult(lm.name, self.layer, self.module, self.k, self.composite, z, z.astype(int), z,
                                z.astype(int), 0, complete=info.complete)
        return RelMaxResult(lm.name, self.layer, self.module, self.k, self.composite,
                            state["rel"][0].numpy(), state["rel"][1].numpy(), state["act"][0].numpy(),
                            state["act"][1].numpy(), int(state["n"]), complete=info.complete)


class RelMaxJob(PassJob[RelMaxResult]):
    """:class:`RelMaxPass` over a dataset as a job (cached, stoppable, resumable, on Ray)."""

    kind = "relmax"
    version = 1

    def __init__(self, lm: LoadedModel, dataset, layer: str, *, k: int = 8, composite: str = "epsilon",
                 indices: Sequence[int] | None = None):
        super().__init__(dataset, indices)
        self.lm, self.layer, self.k, self.composite = lm, layer, int(k), composite

    def make_pass(self) -> DatasetPass:
        return RelMaxPass(self.lm, self.layer, self.k, self.composite)

    def key(self) -> str | None:
        from vizcore.identity import result_key

        return result_key(self.kind, self.version, self.lm, self.dataset, layer=self.pass_.module, k=self.k,
                          composite=self.composite, indices=self.indices)

    def describe(self) -> str:
        return f"relevance-ranked examples {self.lm.name} {self.layer}"

    def encode(self, r: RelMaxResult) -> Any:
        return {"model": r.model, "layer": r.layer, "module": r.module, "k": r.k, "composite": r.composite,
                "rel_values": torch.from_numpy(r.rel_values), "rel_images": torch.from_numpy(r.rel_images),
                "act_values": torch.from_numpy(r.act_values), "act_images": torch.from_numpy(r.act_images),
                "n_images": r.n_images, "files": list(r.files), "complete": r.complete}

    def decode(self, d: Any) -> RelMaxResult:
        d = dict(d)
        for key in ("rel_values", "rel_images", "act_values", "act_images"):
            d[key] = d[key].numpy()
        return RelMaxResult(**d)
