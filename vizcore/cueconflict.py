"""Texture vs shape: the cue-conflict test of Geirhos et al. (ICLR 2019).

Paper: "ImageNet-trained CNNs are biased towards texture; increasing shape bias
improves accuracy and robustness", https://openreview.net/forum?id=Bygh9j09KX

A 1000-way ImageNet classifier sees 1,280 style-transfer images whose shape
comes from one of 16 entry-level categories and whose texture from another.
Its decision is mapped to the 16 categories by averaging the softmax
probabilities over each category's ImageNet classes and taking the largest
average (the aggregation the authors recommend). The 80 images whose shape and
texture class coincide are dropped, leaving 1,200; then

    shape bias = shape hits / (shape hits + texture hits)

where a *shape hit* is an image decided as its shape category and a *texture
hit* one decided as its texture category. Decisions for any other category
count in neither. The same mapping scores the filled silhouettes and edge
drawings (plain accuracy).

Differences from the authors' scripts: decisions are computed for a batch as one
matrix product (probabilities ``(N, 1000)`` times a ``(1000, 16)`` averaging
matrix) instead of a loop per image (the averages agree to float rounding; an
exact tie goes to the alphabetically first category, as with a strict ``>`` over
the sorted categories).

Stimuli are fed as the authors' model-vs-human toolbox feeds them: at 224 x 224 as
they are, with no resize to 256 and no centre crop (:func:`stimulus_protocol`, recorded
in every result); only a model whose input size is not 224 gets them resized.

Scoring is a dataset pass (:class:`ShapeBiasPass`, :mod:`vizcore.passes`): per-image
decisions, merged exactly, on the local backend or on Ray.

Stimuli come from a local folder laid out like the ``stimuli/`` folder of the
public repository rgeirhos/texture-vs-shape, or are downloaded from it once:
:mod:`vizcore.data.stimuli` finds, downloads and checksums them (its names are
re-exported here).
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

# The stimuli live with the other datasets; re-exported for the CLI, the pages and old callers.
from vizcore.data.stimuli import (  # noqa: F401
    STIMULI_COUNTS,
    STIMULI_DIGEST,
    STIMULI_URL,
    SUBSET_FOLDERS,
    StimuliError,
    default_stimuli_dir,
    download_stimuli,
    locate_stimuli,
    stimuli_digest,
)
from vizcore import jobs
from vizcore.jobs import PassJob, RunOptions
from vizcore.passes import DatasetPass, PassInfo

__all__ = ["CATEGORIES", "CATEGORY_CLASSES", "Decision", "NoImageNetHeadError", "REFERENCES",
           "ShapeBiasJob", "ShapeBiasPass", "ShapeBiasResult", "StimuliError", "SubsetAccuracy", "check_imagenet_head",
           "decide", "locate_stimuli", "shape_bias", "stimulus_protocol", "stimulus_transform", "summary_lines"]

if TYPE_CHECKING:  # heavy imports stay lazy
    import torch

    from vizcore.models import LoadedModel, ModelSpec

PAPER = "https://openreview.net/forum?id=Bygh9j09KX"
REPO = "https://github.com/rgeirhos/texture-vs-shape"

# --------------------------------------------------------------------------------------------
# The 16 entry-level categories and their ImageNet-1k classes.
#
# Indices are standard ImageNet-1k class indices (WordNet ids sorted). The lists follow the
# published mapping of Geirhos et al. (the WordNet hyponyms of each category that are
# ImageNet-1k classes, as curated by the authors in texture-vs-shape ``code/helper`` and
# model-vs-human ``helper/human_categories.py``); they were written out here from the
# (index, WordNet id, label) table of ImageNet-1k and checked class by class against the
# published per-category counts (PUBLISHED_COUNTS below; 207 classes in all). Labels and
# WordNet ids are given for every class outside the two large ranges.


def _span(first: int, last: int, *, without: Iterable[int] = ()) -> tuple[int, ...]:
    """Indices ``first..last`` inclusive, leaving out ``without``."""
    skip = set(without)
    return tuple(i for i in range(first, last + 1) if i not in skip)


CATEGORY_CLASSES: dict[str, tuple[int, ...]] = {
    # 404 n02690373 airliner
    "airplane": (404,),
    # 294 n02132136 brown bear, 295 n02133161 American black bear, 296 n02134084 ice bear,
    # 297 n02134418 sloth bear
    "bear": _span(294, 297),
    # 444 n02835271 bicycle-built-for-two, 671 n03792782 mountain bike
    "bicycle": (444, 671),
    # Birds in three ImageNet ranges: 8-24 (cock ... great grey owl), 80-100 (black grouse ...
    # black swan), 127-145 (white stork ... king penguin). The published mapping leaves out
    # 9 ostrich, 17 jay, 21 kite, 84 peacock, 85 quail, 86 partridge, 97 drake, 134 crane.
    "bird": (_span(8, 24, without=(9, 17, 21)) + _span(80, 100, without=(84, 85, 86, 97))
             + _span(127, 145, without=(134,))),
    # 472 n02951358 canoe, 554 n03344393 fireboat, 625 n03662601 lifeboat,
    # 814 n04273569 speedboat, 914 n04612504 yawl
    "boat": (472, 554, 625, 814, 914),
    # 440 n02823428 beer bottle, 720 n03937543 pill bottle, 737 n03983396 pop bottle,
    # 898 n04557648 water bottle, 899 n04560804 water jug, 901 n04579145 whiskey jug,
    # 907 n04591713 wine bottle
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    # 436 n02814533 beach wagon, 511 n03100240 convertible, 817 n04285008 sports car
    "car": (436, 511, 817),
    # 281 n02123045 tabby, 282 n02123159 tiger cat, 283 n02123394 Persian cat,
    # 284 n02123597 Siamese cat, 285 n02124075 Egyptian cat, 286 n02125311 cougar
    "cat": _span(281, 286),
    # 423 n02791124 barber chair, 559 n03376595 folding chair, 765 n04099969 rocking chair,
    # 857 n04429376 throne
    "chair": (423, 559, 765, 857),
    # 409 n02708093 analog clock, 530 n03196217 digital clock, 892 n04548280 wall clock
    "clock": (409, 530, 892),
    # Dog breeds 152 (Japanese spaniel) to 268 (Mexican hairless); the published mapping
    # leaves out 192 cairn, 204 Lhasa, 227 kelpie, 242 boxer, 251 dalmatian, 258 Samoyed,
    # 260 chow, 264 Cardigan (and starts after 151 Chihuahua).
    "dog": _span(152, 268, without=(192, 204, 227, 242, 251, 258, 260, 264)),
    # 385 n02504013 Indian elephant, 386 n02504458 African elephant
    "elephant": (385, 386),
    # 508 n03085013 computer keyboard, 878 n04505470 typewriter keyboard
    "keyboard": (508, 878),
    # 499 n03041632 cleaver
    "knife": (499,),
    # 766 n04111531 rotisserie
    "oven": (766,),
    # 555 n03345487 fire engine, 569 n03417042 garbage truck, 656 n03770679 minivan,
    # 675 n03796401 moving van, 717 n03930630 pickup, 734 n03977966 police van,
    # 864 n04461696 tow truck, 867 n04467665 trailer truck
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}

#: The 16 categories in alphabetical order (the order of decision indices).
CATEGORIES: tuple[str, ...] = tuple(sorted(CATEGORY_CLASSES))

#: Classes per category in the published mapping (texture-vs-shape / model-vs-human).
PUBLISHED_COUNTS: dict[str, int] = {
    "airplane": 1, "bear": 4, "bicycle": 2, "bird": 49, "boat": 5, "bottle": 7, "car": 3, "cat": 6,
    "chair": 4, "clock": 3, "dog": 109, "elephant": 2, "keyboard": 2, "knife": 1, "oven": 1, "truck": 8,
}

#: Bumped whenever the mapping or the scoring changes (part of every cache key).
MAPPING_VERSION = 2  # 2: stimuli fed as they are (model-vs-human protocol); weights keyed by content


def category_matrix(n_classes: int = 1000, *, device=None, dtype=None) -> "torch.Tensor":
    """The ``(n_classes, 16)`` averaging matrix: column ``c`` holds ``1/|c|`` on the classes of ``c``.

    ``probs @ category_matrix()`` gives each category's mean probability.
    """
    import torch

    m = torch.zeros(n_classes, len(CATEGORIES), device=device, dtype=dtype or torch.float32)
    for j, cat in enumerate(CATEGORIES):
        idx = torch.tensor(CATEGORY_CLASSES[cat], device=device)
        m[idx, j] = 1.0 / len(idx)
    return m


def category_probabilities(logits: "torch.Tensor") -> "torch.Tensor":
    """``(N, 1000)`` logits -> ``(N, 16)`` mean softmax probability per category."""
    import torch

    probs = torch.softmax(logits.float(), dim=-1)
    return probs @ category_matrix(probs.shape[-1], device=probs.device)


def decide(logits: "torch.Tensor") -> list[str]:
    """The entry-level decision for each row of ``(N, 1000)`` logits."""
    idx = category_probabilities(logits).argmax(dim=-1).tolist()
    return [CATEGORIES[i] for i in idx]


# --------------------------------------------------------------------------------------------
# Published reference points (data with their sources; never mixed with measured values).
@dataclass(frozen=True)
class Reference:
    """A shape bias reported elsewhere; ``low``/``high`` span the values given by different sources."""

    name: str
    shape_bias: float
    source: str
    url: str
    kind: str = "model"  # "human" or "model"
    model: str | None = None  # the vizcore registry name of the same architecture, if any
    low: float | None = None
    high: float | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "shape_bias": self.shape_bias, "low": self.low, "high": self.high,
                "source": self.source, "url": self.url, "kind": self.kind, "model": self.model}


REFERENCES: tuple[Reference, ...] = (
    Reference("human observers", 0.96, "Geirhos et al., ICLR 2019 (Fig. 4; about 0.96)", PAPER,
              kind="human"),
    Reference("AlexNet (torchvision)", 0.253, "rgeirhos/texture-vs-shape README and issue #7 (25.3%)",
              f"{REPO}/issues/7", model="alexnet"),
    Reference("VGG-16 (torchvision)", 0.092, "rgeirhos/texture-vs-shape README and issue #7 (9.2%)",
              f"{REPO}/issues/7", model="vgg16"),
    Reference("ResNet-50 (torchvision)", 0.2175,
              "rgeirhos/texture-vs-shape README (21.39%) and issue #7 (22.1%)",
              f"{REPO}/issues/7", model="resnet50", low=0.2139, high=0.221),
    Reference("BagNet-33", 0.05, "bethgelab/model-vs-human (Geirhos et al., NeurIPS 2021; about 0.05)",
              "https://github.com/bethgelab/model-vs-human", model="bagnet33"),
)


# --------------------------------------------------------------------------------------------
# Errors (the stimuli's own, StimuliError, comes from vizcore.data.stimuli)
class NoImageNetHeadError(ValueError):
    """The model does not output the 1000 ImageNet classes the decision rule needs."""




# --------------------------------------------------------------------------------------------
# Results
@dataclass(frozen=True)
class Decision:
    """One cue-conflict image and the model's entry-level decision."""

    file: str
    shape: str
    texture: str
    decision: str

    @property
    def outcome(self) -> str:
        """``shape``, ``texture`` or ``other``."""
        return "shape" if self.decision == self.shape else "texture" if self.decision == self.texture else "other"

    def to_json(self) -> dict:
        return {"file": self.file, "shape": self.shape, "texture": self.texture, "decision": self.decision}


@dataclass(frozen=True)
class SubsetAccuracy:
    """Plain 16-way accuracy on the silhouettes or the edge drawings."""

    n: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    def to_json(self) -> dict:
        return {"n": self.n, "correct": self.correct, "accuracy": self.accuracy}


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


@dataclass(frozen=True)
class ShapeBiasResult:
    """Everything measured for one model on one set of stimuli.

    ``per_category[c]`` is the fraction of shape decisions among the shape or
    texture hits of the images whose *shape* is ``c`` (the rows of the Geirhos
    plot; ``None`` where there was no hit). ``decisions`` keeps every image.
    """

    model: str
    weights: dict
    stimuli: str
    fingerprint: str
    decisions: tuple[Decision, ...]
    silhouettes: SubsetAccuracy | None = None
    edges: SubsetAccuracy | None = None
    skipped: tuple[dict, ...] = ()
    seconds: float = 0.0
    protocol: dict = field(default_factory=dict)
    cached: bool = field(default=False, compare=False)

    @property
    def n(self) -> int:
        return len(self.decisions)

    @property
    def shape_hits(self) -> int:
        return sum(d.outcome == "shape" for d in self.decisions)

    @property
    def texture_hits(self) -> int:
        return sum(d.outcome == "texture" for d in self.decisions)

    @property
    def shape_bias(self) -> float | None:
        return _ratio(self.shape_hits, self.shape_hits + self.texture_hits)

    @property
    def shape_accuracy(self) -> float:
        return self.shape_hits / self.n if self.n else float("nan")

    @property
    def texture_accuracy(self) -> float:
        return self.texture_hits / self.n if self.n else float("nan")

    @property
    def per_category_counts(self) -> dict[str, dict[str, int]]:
        out = {c: {"n": 0, "shape": 0, "texture": 0} for c in CATEGORIES}
        for d in self.decisions:
            row = out[d.shape]
            row["n"] += 1
            if d.outcome in ("shape", "texture"):
                row[d.outcome] += 1
        return out

    @property
    def per_category(self) -> dict[str, float | None]:
        return {c: _ratio(r["shape"], r["shape"] + r["texture"]) for c, r in self.per_category_counts.items()}

    def to_json(self, *, decisions: bool = False) -> dict:
        out = {
            "model": self.model, "weights": self.weights, "stimuli": self.stimuli,
            "fingerprint": self.fingerprint, "n": self.n, "shape_hits": self.shape_hits,
            "texture_hits": self.texture_hits, "shape_bias": self.shape_bias,
            "shape_accuracy": self.shape_accuracy, "texture_accuracy": self.texture_accuracy,
            "per_category": self.per_category, "per_category_counts": self.per_category_counts,
        }
        for name in ("silhouettes", "edges"):
            sub = getattr(self, name)
            if sub is not None:
                out[name] = sub.accuracy if sub.n else None
                out[f"{name}_n"] = sub.n
                out[f"{name}_correct"] = sub.correct
        if not self.n:  # every image unreadable: no accuracies (and never NaN in JSON)
            out["shape_accuracy"] = out["texture_accuracy"] = None
        out["skipped"] = list(self.skipped)
        out["protocol"] = dict(self.protocol)
        out["seconds"] = self.seconds
        if decisions:
            out["decisions"] = [d.to_json() for d in self.decisions]
        return out

    @classmethod
    def from_json(cls, obj: dict, *, cached: bool = False) -> "ShapeBiasResult":
        subs = {}
        for name in ("silhouettes", "edges"):
            if obj.get(f"{name}_n") is not None:
                subs[name] = SubsetAccuracy(int(obj[f"{name}_n"]), int(obj[f"{name}_correct"]))
        return cls(model=obj["model"], weights=dict(obj["weights"]), stimuli=obj["stimuli"],
                   fingerprint=obj["fingerprint"],
                   decisions=tuple(Decision(**d) for d in obj.get("decisions", [])),
                   skipped=tuple(obj.get("skipped", [])), seconds=float(obj.get("seconds", 0.0)),
                   protocol=dict(obj["protocol"]), cached=cached, **subs)


# --------------------------------------------------------------------------------------------
# Scoring
def check_imagenet_head(spec: "ModelSpec") -> None:
    """Raise :class:`NoImageNetHeadError` for a model that is not a 1000-way ImageNet classifier."""
    if not spec.imagenet_head:
        raise NoImageNetHeadError(
            f"{spec.name} has no 1000-class ImageNet head, and the cue-conflict decision rule maps "
            "ImageNet classes to the 16 categories; choose an ImageNet classifier "
            "(`python -m vizcore models`)")


STIMULUS_SIZE = 224
"""Side of the published cue-conflict, silhouette and edge stimuli, in pixels."""


def stimulus_protocol(spec: "ModelSpec") -> dict:
    """How stimuli are fed to ``spec``: the model-vs-human protocol.

    The stimuli are 224 x 224 and go to the network as they are: no resize to 256 and
    no centre crop (the ImageNet evaluation pipeline would cut 14 px from every side
    and move the measured bias). They are resized only when the model's input size
    differs from 224, then normalised with the model's mean and std.
    """
    size = int(spec.input_size)
    p = spec.preprocess
    return {"name": "model-vs-human", "stimulus_size": STIMULUS_SIZE, "input_size": size,
            "resize": size != STIMULUS_SIZE, "crop": False, "interpolation": p.interpolation,
            "mean": list(p.mean), "std": list(p.std)}


def stimulus_transform(spec: "ModelSpec"):
    """PIL image -> ``(3, S, S)`` normalised tensor under :func:`stimulus_protocol` (``S`` the
    model's input size). A stimulus already at ``S x S`` passes unchanged (Pillow copies it)."""
    from torchvision import transforms as T

    proto = stimulus_protocol(spec)
    s = proto["input_size"]
    return T.Compose([T.Resize((s, s), interpolation=T.InterpolationMode(proto["interpolation"]), antialias=True),
                      T.ToTensor(), T.Normalize(proto["mean"], proto["std"])])


def _subset(root: Path, subset: str):
    from vizcore.data import cue_conflict_dataset

    try:
        return cue_conflict_dataset(root, subset)
    except (FileNotFoundError, ValueError):
        return None


class ShapeBiasPass(DatasetPass):
    """The cue-conflict test as a :class:`~vizcore.passes.DatasetPass`.

    Its dataset (:attr:`dataset`) is every stimulus of the root in one list: the
    cue-conflict images, then the silhouettes and edge drawings when present (each
    item's ``labels["subset"]`` says which). The partial state of a batch is the
    decision of each of its images, keyed by index; merging is a union of disjoint
    keys, exact in any order. The constructor finds the stimuli and looks the result
    up in the disk cache (:attr:`cached`); :class:`ShapeBiasJob` caches a complete result.

    Args:
        lm: a loaded 1000-way ImageNet classifier.
        stimuli_root: a stimuli root or the cue-conflict folder; ``None``: :func:`locate_stimuli`.
        use_cache: read the result from the disk cache.
        download_progress: show a bar while the stimuli are downloaded.
    """

    kind = "shape-bias"

    def __init__(self, lm: "LoadedModel", stimuli_root: str | os.PathLike | None = None, *,
                 use_cache: bool = True, download_progress: bool = False):
        from vizcore.cache import load_torch
        from vizcore.data.datasets import ImageDataset, ImageItem
        from vizcore.identity import result_key

        check_imagenet_head(lm.spec)
        super().__init__({"net": lm})
        self.use_cache = use_cache
        self.root = locate_stimuli(stimuli_root, progress=download_progress)
        cue = _subset(self.root, "cue-conflict")
        if cue is None:
            raise StimuliError(f"no cue-conflict stimuli under {self.root}")
        sets = {"cue-conflict": cue}
        for name in ("silhouettes", "edges"):
            if (ds := _subset(self.root, name)) is not None:
                sets[name] = ds
        self.subsets = {name: len(ds) for name, ds in sets.items()}
        self.dataset = ImageDataset("stimuli", [ImageItem(it.path, it.label, {**it.labels, "subset": name})
                                                for name, ds in sets.items() for it in ds.items], str(self.root))
        self.fingerprint = hashlib.sha256(
            "".join(f"{k}:{ds.fingerprint()}" for k, ds in sets.items()).encode()).hexdigest()[:20]
        self.protocol = stimulus_protocol(lm.spec)
        self.key = result_key("shape_bias", MAPPING_VERSION, lm, None, stimuli=self.fingerprint,
                              protocol=self.protocol)
        self.cached: ShapeBiasResult | None = None
        if use_cache and (hit := load_torch("shape_bias", self.key)) is not None:
            try:
                self.cached = ShapeBiasResult.from_json(hit, cached=True)
            except (KeyError, TypeError, ValueError):
                pass  # an entry from an incompatible version: recompute

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.update(cached=None, dataset=None)  # the workers get their files with each batch
        return state

    @property
    def total(self) -> int:
        return len(self.dataset)

    def transform(self):
        return stimulus_transform(self.model("net").spec)

    def empty(self) -> dict[int, str]:
        return {}

    def step(self, x: "torch.Tensor", indices: Sequence[int]) -> dict[int, str]:
        import torch

        lm = self.model("net")
        with torch.inference_mode(), lm.lock:  # the lock: no tap of another caller sees this pass
            logits = lm.model(x.to(lm.device))
        if not torch.is_tensor(logits) or logits.ndim != 2 or logits.shape[-1] != 1000:
            shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
            raise NoImageNetHeadError(
                f"{lm.spec.name} outputs {shape}, not 1000 ImageNet class scores; "
                "the cue-conflict decision rule needs a 1000-way ImageNet classifier")
        return dict(zip((int(i) for i in indices), decide(logits)))

    def merge(self, a: dict[int, str], b: dict[int, str]) -> dict[int, str]:
        return {**a, **b}

    def finish(self, state: dict[int, str], info: PassInfo) -> "ShapeBiasResult":
        """The :class:`ShapeBiasResult` of the decisions so far. Pure: :class:`ShapeBiasJob` caches it."""
        if self.cached is not None:
            return self.cached
        lm = self.model("net")
        items = self.dataset.items
        decisions = tuple(Decision(it.path, it.labels["shape"], it.labels["texture"], state[i])
                          for i, it in enumerate(items) if it.labels["subset"] == "cue-conflict" and i in state)
        subs = {}
        for name in ("silhouettes", "edges"):
            if name in self.subsets:
                pairs = [(it.label, state[i]) for i, it in enumerate(items)
                         if it.labels["subset"] == name and i in state]
                subs[name] = SubsetAccuracy(len(pairs), sum(lab == d for lab, d in pairs))
        subset_of = {it.path: it.labels["subset"] for it in items}
        skipped = tuple(dict(s, subset=subset_of.get(s["file"], "")) for s in info.skipped)
        return ShapeBiasResult(
            model=lm.spec.name, weights=lm.weights.to_json(), stimuli=str(self.root), fingerprint=self.fingerprint,
            decisions=decisions, skipped=skipped, seconds=info.seconds, protocol=dict(self.protocol), **subs)


class ShapeBiasJob(PassJob[ShapeBiasResult]):
    """The cue-conflict test of one model as a job (:mod:`vizcore.jobs`): cached under
    ``shape_bias/`` (through :mod:`vizcore.cache`), stopped with the decisions so far, on the
    local or Ray engine. Build the pass first (:class:`ShapeBiasPass`: it finds the stimuli)."""

    kind = "shape_bias"
    require_images = False

    def __init__(self, p: ShapeBiasPass):
        super().__init__(p.dataset)
        self._p = p

    @classmethod
    def of(cls, lm: "LoadedModel", stimuli_root: str | os.PathLike | None = None, *, reuse: bool = True,
           download_progress: bool = False) -> "ShapeBiasJob":
        return cls(ShapeBiasPass(lm, stimuli_root, use_cache=reuse, download_progress=download_progress))

    def make_pass(self) -> ShapeBiasPass:
        return self._p

    def key(self) -> str:
        return self._p.key

    def describe(self) -> str:
        return f"shape bias {self._p.model('net').spec.name}"

    def load(self) -> ShapeBiasResult | None:
        return self._p.cached

    def encode(self, result: ShapeBiasResult) -> dict:
        return result.to_json(decisions=True)


def shape_bias(lm: "LoadedModel", stimuli_root: str | os.PathLike | None = None, *,
               options: RunOptions | None = None, progress: bool | Callable[[int, int], None] = False,
               should_stop: Callable[[], bool] | None = None, use_cache: bool = True, **run: Any) -> ShapeBiasResult:
    """Score ``lm`` on the cue-conflict stimuli (and silhouettes and edges, when present).

    Args:
        lm: a loaded 1000-way ImageNet classifier (``lm.spec.imagenet_head``).
        stimuli_root: a stimuli root or the cue-conflict folder; ``None`` uses
            :func:`locate_stimuli` (``$VIZCORE_STIMULI``, the download cache, a download).
        options: batch size (default 16), loader workers, engine (``local`` or ``ray``; the same
            decisions), Ray address and cache (:class:`vizcore.jobs.RunOptions`); ``run``: the same
            as keywords.
        progress: ``True`` for a tqdm bar on stderr, or ``fn(done, total)`` called per batch.
        should_stop: polled between batches; when it returns true :class:`vizcore.jobs.Stopped` is
            raised with the decisions so far.
        use_cache: read and write the result on disk (key: the weights' content, the stimuli
            fingerprint, the protocol, the mapping version); ``options.cache`` says the same.

    Returns:
        A :class:`ShapeBiasResult` with every image's decision and the protocol used.
    """
    options = RunOptions.of(options or RunOptions(batch_size=16), **run)
    options = options if use_cache else options.but(cache=False)
    job = ShapeBiasJob.of(lm, stimuli_root, reuse=options.cache, download_progress=progress is True)
    return jobs.run(job, options, progress=progress, should_stop=should_stop)


def summary_lines(result: ShapeBiasResult) -> list[str]:
    """Human-readable lines for the CLI."""
    def pct(x: float | None) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

    w = result.weights
    lines = [
        f"{result.model} (weights: {w.get('source')}{': ' + w['detail'] if w.get('detail') else ''})",
        f"stimuli: {result.stimuli}  ({result.n} cue-conflict images{', cached' if result.cached else ''})",
        f"shape bias           {pct(result.shape_bias)}   ({result.shape_hits} shape hits, "
        f"{result.texture_hits} texture hits)",
        f"shape accuracy       {pct(result.shape_accuracy)}",
        f"texture accuracy     {pct(result.texture_accuracy)}",
    ]
    for name in ("silhouettes", "edges"):
        sub = getattr(result, name)
        if sub is not None:
            lines.append(f"{name + ' accuracy':<21}{pct(sub.accuracy)}   ({sub.correct}/{sub.n})")
    lines.append("fraction of shape decisions per shape category:")
    counts = result.per_category_counts
    for c, v in result.per_category.items():
        r = counts[c]
        lines.append(f"  {c:<9} {pct(v):>5}   ({r['shape']} shape, {r['texture']} texture of {r['n']})")
    if result.skipped:
        lines.append(f"skipped {len(result.skipped)} unreadable files")
    lines.append("published reference points (not measured here):")
    for ref in REFERENCES:
        lines.append(f"  {ref.name:<24} {ref.shape_bias:.2f}   {ref.source}")
    return lines
