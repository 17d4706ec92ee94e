"""Layer-wise linear probes: how linearly decodable a label is at each depth.

For a labelled dataset, the pooled features of every tap (see
:mod:`vizcore.features`, about 9,600 per layer) are standardised and fed to one
multinomial logistic regression per layer, on a fixed seeded stratified
train/test split or with stratified k-fold cross-validation. The accuracy of
each layer comes with a 95% Wilson score interval over the test predictions
(over all out-of-fold predictions for k-fold). The cue-conflict stimuli are
split by exemplar (:func:`exemplar_groups`): each shape or texture exemplar is
rendered into many stimuli, and a plain random split lets even the first layer
"decode" shape by recognising outlines seen in training.

This is the protocol of the "ImageNet supervised vs Random" rows in Zhang,
Isola & Efros, "Split-Brain Autoencoders" (CVPR 2017, https://arxiv.org/abs/1611.09842),
with logistic regression in place of their SGD-trained linear layers. With
``compare_random=True`` the same architecture with seeded random weights is
probed in the same call, on the same split.

The fit runs in scikit-learn (``StandardScaler`` + ``LogisticRegression``), or,
with ``fit_device="cuda"`` (or ``"auto"`` when CUDA is present), as an equivalent
L2-regularised linear layer trained with full-batch L-BFGS in PyTorch.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from vizcore.cache import load_json, save_json
from vizcore.data.datasets import ImageDataset
from vizcore.features import Features, Pooling, extract_features
from vizcore.jobs import RunOptions, StepJob, Stopped, Tick
from vizcore.models import LoadedModel, WeightsInfo
from vizcore.stats import wilson_interval

__all__ = ["LayerProbe", "ProbeResult", "exemplar_groups", "fit_probes", "probe_features"]


@dataclass(frozen=True)
class LayerProbe:
    """The probe of one layer: test accuracy with its 95% interval."""

    name: str
    accuracy: float
    ci_low: float
    ci_high: float
    n_features: int
    fold_accuracies: tuple[float, ...] = ()

    def to_json(self) -> dict:
        d = {"name": self.name, "accuracy": self.accuracy, "ci_low": self.ci_low,
             "ci_high": self.ci_high, "n_features": self.n_features}
        if self.fold_accuracies:
            d["fold_accuracies"] = list(self.fold_accuracies)
        return d


@dataclass(frozen=True)
class ProbeResult:
    """Probes of every requested layer of one model (and, optionally, its random twin).

    ``layers`` are in network order. ``random`` holds the random-init twin's result
    when it was asked for. ``n_test`` counts the predictions the accuracy is based on
    (the whole labelled set for k-fold, where ``n_train`` is the mean fold's training size).
    """

    model: str
    weights: WeightsInfo
    label: str
    dataset: str
    n_train: int
    n_test: int
    classes: tuple[str, ...]
    layers: tuple[LayerProbe, ...]
    split: str
    seed: int
    skipped: tuple[dict, ...] = ()
    random: "ProbeResult | None" = None

    def layer(self, name: str) -> LayerProbe:
        for lp in self.layers:
            if lp.name == name:
                return lp
        raise KeyError(name)

    def to_json(self) -> dict:
        d = {"model": self.model, "weights": self.weights.to_json(), "label": self.label,
             "dataset": self.dataset, "n_train": self.n_train, "n_test": self.n_test,
             "classes": list(self.classes), "split": self.split, "seed": self.seed,
             "layers": [lp.to_json() for lp in self.layers]}
        if self.skipped:
            d["skipped"] = list(self.skipped)
        if self.random is not None:
            d["random_init"] = self.random.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ProbeResult":
        w = d["weights"]
        return cls(
            model=d["model"], weights=WeightsInfo(w["source"], w.get("detail", ""), w.get("warning")),
            label=d["label"], dataset=d.get("dataset", ""), n_train=d["n_train"], n_test=d["n_test"],
            classes=tuple(d.get("classes", ())), split=d.get("split", ""), seed=d.get("seed", 0),
            layers=tuple(LayerProbe(lp["name"], lp["accuracy"], lp["ci_low"], lp["ci_high"], lp["n_features"],
                                    tuple(lp.get("fold_accuracies", ()))) for lp in d["layers"]),
            skipped=tuple(d.get("skipped", ())),
            random=cls.from_json(d["random_init"]) if d.get("random_init") else None)

    def to_rows(self) -> list[dict]:
        """Flat rows (one per layer, twin included) for tables and CSV export."""
        rows = []
        for res in (self, self.random):
            if res is None:
                continue
            for depth, lp in enumerate(res.layers):
                rows.append({"model": res.model, "weights": res.weights.source, "label": res.label,
                             "depth": depth, "layer": lp.name, "accuracy": lp.accuracy,
                             "ci_low": lp.ci_low, "ci_high": lp.ci_high, "n_features": lp.n_features,
                             "n_train": res.n_train, "n_test": res.n_test})
        return rows


# ----------------------------------------------------------------------- splits
def _usable(labels: Sequence[str | None], min_count: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows with a label whose class has at least ``min_count`` members: (rows, y, classes)."""
    from collections import Counter

    counts = Counter(lab for lab in labels if lab is not None)
    classes = sorted(c for c, k in counts.items() if k >= min_count)
    if len(classes) < 2:
        raise ValueError(f"need at least 2 classes with {min_count}+ labelled images; "
                         f"found {dict(counts) or 'no labels'}")
    index = {c: i for i, c in enumerate(classes)}
    rows = np.array([i for i, lab in enumerate(labels) if lab in index], dtype=int)
    y = np.array([index[labels[i]] for i in rows], dtype=int)
    return rows, y, classes


def holdout_split(y: np.ndarray, test_size: float = 0.25, seed: int = 0,
                  groups: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test positions into ``y``.

    Without groups: scikit-learn's ``train_test_split``. With groups: the first fold of
    ``StratifiedGroupKFold`` with about ``1 / test_size`` folds (at most the smallest number
    of groups in a class), so no group has images on both sides.
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    pos = np.arange(len(y))
    if groups is not None:
        n_splits = max(2, min(round(1 / test_size), _min_groups(y, groups)))
        sgk = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        tr, te = next(sgk.split(np.zeros(len(y)), y, np.asarray(groups)))
        return np.sort(tr), np.sort(te)
    n_test = max(len(np.unique(y)), int(math.ceil(test_size * len(y))))
    tr, te = train_test_split(pos, test_size=n_test, stratify=y, random_state=seed, shuffle=True)
    return np.sort(tr), np.sort(te)


def _min_groups(y: np.ndarray, groups: Sequence[str]) -> int:
    per_class: dict = {}
    for c, g in zip(y, groups):
        per_class.setdefault(c, set()).add(g)
    return min(len(v) for v in per_class.values())


def kfold_splits(y: np.ndarray, folds: int, seed: int = 0,
                 groups: Sequence[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold positions (``StratifiedGroupKFold`` when ``groups`` are given)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is not None:
        if _min_groups(y, groups) < folds:
            raise ValueError(f"{folds} grouped folds need at least {folds} groups per class; "
                             f"the smallest class has {_min_groups(y, groups)}")
        sgk = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(sgk.split(np.zeros(len(y)), y, np.asarray(groups)))
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(skf.split(np.zeros(len(y)), y))


def exemplar_groups(dataset: ImageDataset, label: str) -> list[str] | None:
    """For cue-conflict stimuli (``<shape><i>-<texture><j>.png``), the exemplar each label comes from.

    Every shape exemplar is rendered with several textures and every texture exemplar onto
    several shapes; a random split would test on exemplars seen in training, and even the
    first layer would "decode" shape by matching outlines. Splitting by exemplar
    (``airplane3`` for the shape label, ``clock1`` for the texture label) tests on unseen
    exemplars. ``None`` for other datasets.
    """
    import re
    from pathlib import Path

    pat = re.compile(r"^([a-z]+\d+)-([a-z]+\d+)$")
    out = []
    for it in dataset.items:
        m = pat.match(Path(it.path).stem)
        if m is None or "texture" not in it.labels:
            return None
        out.append(m.group(2) if label == "texture" else m.group(1))
    return out


# ------------------------------------------------------------------------- fits
def make_classifier(C: float = 1.0, max_iter: int = 1000, seed: int = 0):
    """Standardisation then multinomial logistic regression (L2), as a scikit-learn pipeline.

    :func:`fit_probes` fits exactly this model, only faster (see :func:`_standardise_and_reduce`).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))


def _standardise_and_reduce(xtr: np.ndarray, xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise with training statistics, then, when there are more features than
    training rows, rotate onto the row space of the training matrix.

    An L2-regularised linear model's weights always lie in that row space (the
    gradient of the loss is ``X.T @ r`` plus a multiple of ``w``), so fitting on
    the ``n_train`` coordinates ``X @ V`` (``X = U S V^T``) reaches the same optimum
    and the same predictions as fitting on all features, much faster.
    """
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(xtr)
    xtr, xte = sc.transform(xtr).astype(np.float64), sc.transform(xte).astype(np.float64)
    if xtr.shape[1] > xtr.shape[0]:
        # X V = U S from the eigenvectors of the Gram matrix X X^T = U S^2 U^T (cheaper than an SVD of X).
        evals, u = np.linalg.eigh(xtr @ xtr.T)
        keep = evals > evals.max() * 1e-10
        u, sv = u[:, keep], np.sqrt(evals[keep])
        xte = (xte @ xtr.T) @ (u / sv)
        xtr = u * sv
    return xtr, xte


def _fit_predict_sklearn(xtr, ytr, xte, C: float, max_iter: int, seed: int) -> np.ndarray:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xtr, xte = _standardise_and_reduce(xtr, xte)
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(xtr, ytr)
    return clf.predict(xte)


def _fit_predict_torch(xtr, ytr, xte, C: float, max_iter: int, device: str) -> np.ndarray:
    """The same objective as scikit-learn's: sum of log-losses + ||W||^2 / (2C), bias unpenalised."""
    import torch

    xtr, xte = _standardise_and_reduce(xtr, xte)
    xtr_t = torch.as_tensor(xtr, dtype=torch.float64, device=device)
    xte_t = torch.as_tensor(xte, dtype=torch.float64, device=device)
    y = torch.as_tensor(ytr, dtype=torch.long, device=device)
    k = int(y.max().item()) + 1
    w = torch.zeros(xtr_t.shape[1], k, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, device=device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xtr_t @ w + b, y, reduction="sum") + (w * w).sum() / (2 * C)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return (xte_t @ w + b).argmax(1).cpu().numpy()


def _resolve_fit_device(fit_device: str) -> str:
    if fit_device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "sklearn"
    return fit_device


def probe_features(feats: Features, labels: Sequence[str | None], *, groups: Sequence[str] | None = None,
                   folds: int | None = None, test_size: float = 0.25, seed: int = 0, C: float = 1.0, max_iter: int = 1000,
                   fit_device: str = "auto", progress: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict:
    """Fit one probe per layer of ``feats`` on ``labels`` (one per row); returns the pieces of a result.

    ``groups`` (one per row, optional) keeps each group on one side of every split.
    ``fit_device`` is ``"sklearn"``, ``"cpu"`` / ``"cuda"`` (PyTorch L-BFGS) or ``"auto"``.
    """
    device = _resolve_fit_device(fit_device)
    rows, y, classes = _usable(labels, folds if folds else 2)
    g = None if groups is None else [groups[i] for i in rows]
    if folds:
        splits = kfold_splits(y, folds, seed, g)
        split = f"{folds}-fold"
    else:
        splits = [holdout_split(y, test_size, seed, g)]
        split = f"holdout {test_size:g}"
    if g is not None:
        split += ", grouped by exemplar"
    out = []
    names = list(feats.layers)
    for li, name in enumerate(names):
        if should_stop is not None and should_stop():
            raise Stopped("stopped before every layer was probed")
        x = feats.layers[name][rows]
        correct, total, fold_acc = 0, 0, []
        for tr, te in splits:
            if device == "sklearn":
                pred = _fit_predict_sklearn(x[tr], y[tr], x[te], C, max_iter, seed)
            else:
                pred = _fit_predict_torch(x[tr], y[tr], x[te], C, max_iter, device)
            hits = int((pred == y[te]).sum())
            correct, total = correct + hits, total + len(te)
            fold_acc.append(hits / len(te))
        lo, hi = wilson_interval(correct, total)
        out.append(LayerProbe(name, correct / total, lo, hi, int(x.shape[1]),
                              tuple(fold_acc) if folds else ()))
        if progress is not None:
            progress(li + 1, len(names))
    n_train = int(round(np.mean([len(tr) for tr, _ in splits])))
    n_test = int(sum(len(te) for _, te in splits))
    return {"layers": tuple(out), "classes": tuple(classes), "n_train": n_train, "n_test": n_test,
            "split": split}


PROBES_CACHE_VERSION = 2  # 2: weights identified by content (vizcore.identity), not by source label


def _result_key(lm: LoadedModel, dataset: ImageDataset, names: Sequence[str], pooling: Pooling, **params) -> str:
    from vizcore.identity import result_key

    return result_key("probes", PROBES_CACHE_VERSION, lm, dataset, layers=list(names),
                      pooling=pooling.to_json(), **params)


def fit_probes(model: LoadedModel | str, dataset: ImageDataset | str, *, layers: Sequence[str] | None = None,
               label: str = "class", groups: Sequence[str] | str | None = "auto",
               compare_random: bool = False, random_seed: int = 0,
               test_size: float = 0.25, folds: int | None = None, seed: int = 0, C: float = 1.0,
               max_iter: int = 1000, pool: Pooling | int | None = None, fit_device: str = "auto",
               options: RunOptions | None = None, progress: bool | Callable[[str, int, int], None] = False,
               should_stop: Callable[[], bool] | None = None, **run: Any) -> ProbeResult:
    """Linear probes of every tap (or ``layers``) of ``model`` for ``label`` on ``dataset``.

    Args:
        model: a :class:`LoadedModel` or a registered name (loaded with ``weights="auto"``).
        dataset: an :class:`ImageDataset` or a spec for :func:`vizcore.data.open_dataset`.
        layers: tap names or module paths; ``None`` probes every tap, logits included.
        label: ``"class"``, or ``"shape"`` / ``"texture"`` for the cue-conflict stimuli.
        groups: one group name per dataset image, kept on one side of every split; ``"auto"``:
            :func:`exemplar_groups` (cue-conflict stimuli split by exemplar), ``None``: no groups.
        compare_random: also probe the same architecture with random weights
            (seeded by ``random_seed``) on the same split; stored in ``result.random``.
        test_size: held-out fraction for the single stratified split (when ``folds`` is None).
        folds: stratified k-fold cross-validation instead of one split.
        seed: seeds the split (and the solver).
        C: inverse L2 strength of the logistic regression (scikit-learn's convention).
        pool: pooling of the feature maps (see :class:`vizcore.features.Pooling`).
        fit_device: ``"auto"`` (GPU linear layer when CUDA is present, else scikit-learn),
            ``"sklearn"``, ``"cpu"`` or ``"cuda"``.
        progress: ``True`` for tqdm bars, or ``f(stage, done, total)`` with stage
            ``"features"``/``"fit"`` (``"random features"``/``"random fit"`` for the twin).
        should_stop: polled often; raising :class:`vizcore.jobs.Stopped` when it returns true.
        options: how the feature pass runs (batch size, loader workers, engine ``local`` or ``ray``
            and Ray address: the same result either way) and whether the on-disk caches of features
            and of the finished result are used (:class:`vizcore.jobs.RunOptions`); ``run``: the same
            as keywords (``batch_size=16, workers=0, cache=False``).

    Returns:
        :class:`ProbeResult` (layers in network order).
    """
    options = RunOptions.of(options, **run)
    cache = options.cache
    if isinstance(dataset, str):
        from vizcore.data import open_dataset

        dataset = open_dataset(dataset)
    if isinstance(model, str):
        import warnings

        from vizcore.models import load_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_model(model, progress=bool(progress))
    pooling = Pooling() if pool is None else (pool if isinstance(pool, Pooling) else Pooling(target=int(pool)))
    labels_all = dataset.labels(label)
    if all(lab is None for lab in labels_all):
        raise ValueError(f"dataset {dataset.name} has no {label!r} labels")
    if isinstance(groups, str):
        if groups != "auto":
            raise ValueError("groups must be 'auto', None or one name per image")
        groups = exemplar_groups(dataset, label)
    if groups is not None and len(groups) != len(dataset):
        raise ValueError(f"{len(groups)} groups for {len(dataset)} images")

    def one(lm: LoadedModel, tag: str) -> ProbeResult:
        names = [t.name for t in lm.taps()] if layers is None else list(layers)
        params = dict(label=label, test_size=test_size, folds=folds, seed=seed, C=C, max_iter=max_iter,
                      groups=None if groups is None else hashlib.sha1("\0".join(groups).encode()).hexdigest(),
                      fit=_resolve_fit_device(fit_device))
        key = _result_key(lm, dataset, names, pooling, **params) if cache else None
        if key is not None:
            hit = load_json("probes", key)
            if hit is not None:
                return ProbeResult.from_json(hit)
        fprog = True if progress is True else (
            (lambda d, t: progress(f"{tag}features".strip(), d, t)) if callable(progress) else False)
        feats = extract_features(lm, dataset, names, pool=pooling, options=options, progress=fprog,
                                 should_stop=should_stop)
        bar = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(feats.layers), unit="layer", desc=f"probes {lm.spec.name} ({lm.weights.source})")
            pprog = lambda d, t: bar.update(d - bar.n)  # noqa: E731
        elif callable(progress):
            pprog = lambda d, t: progress(f"{tag}fit".strip(), d, t)  # noqa: E731
        else:
            pprog = None
        try:
            row_groups = None if groups is None else [groups[int(i)] for i in feats.indices]
            parts = probe_features(feats, feats.labels(dataset, label), groups=row_groups, folds=folds,
                                   test_size=test_size, seed=seed, C=C, max_iter=max_iter, fit_device=fit_device,
                                   progress=pprog, should_stop=should_stop)
        finally:
            if bar is not None:
                bar.close()
        res = ProbeResult(model=lm.spec.name, weights=lm.weights, label=label, dataset=dataset.name,
                          seed=seed, skipped=tuple(feats.skipped), **parts)
        if key is not None:
            save_json("probes", key, res.to_json())
        return res

    main = one(model, "")
    if not compare_random:
        return main
    from vizcore.models import load_model

    # The twin comes from the process's model cache, so it counts against VIZCORE_MODEL_MEMORY_MB.
    twin = one(load_model(model.spec.name, f"random:{int(random_seed)}", device=model.device, progress=False),
               "random ")
    return ProbeResult(**{**{f: getattr(main, f) for f in main.__dataclass_fields__}, "random": twin})


class ProbeFitsJob(StepJob[list]):
    """The probes of some layers of one network, one fit per tick, as a job (:mod:`vizcore.jobs`).

    Run after the :class:`vizcore.features.FeaturesJob` of the same layers (in a
    :class:`vizcore.jobs.ChainJob`, as the Linear probes page does), each fit reads its features
    from the cache and is itself cached by :func:`fit_probes`; the partial result (the fits so far)
    is the curve growing a layer at a time. Result: one :class:`ProbeResult` per (label, layer), labels
    outer, layers in the given order.

    ``units_per_fit``: how many units one fit counts for on a shared progress bar (a chain measured in
    images: about one pass over the images, so that one step of the dashboard does one fit).
    """

    kind = "probe_fits"
    codec = "json"
    unit = "probes"

    def __init__(self, lm: LoadedModel, dataset: ImageDataset, layers: Sequence[str], labels: Sequence[str], *,
                 folds: int | None = None, test_size: float = 0.25, seed: int = 0, units_per_fit: int = 1,
                 options: RunOptions | None = None):
        self.lm, self.dataset, self.layers, self.labels = lm, dataset, list(layers), list(labels)
        self.fit = {"folds": folds, "test_size": float(test_size), "seed": int(seed)}
        self.units_per_fit = max(1, int(units_per_fit))
        self.options = options or RunOptions(workers=0)
        self.total = len(self.layers) * len(self.labels) * self.units_per_fit

    def key(self) -> str:
        from vizcore.identity import result_key

        return result_key(self.kind, PROBES_CACHE_VERSION, self.lm, self.dataset, layers=self.layers,
                          labels=self.labels, **self.fit)

    def describe(self) -> str:
        return f"probes {self.lm.spec.name}"

    def encode(self, result: list) -> list:
        return [r.to_json() for r in result]

    def decode(self, data: list) -> list:
        return [ProbeResult.from_json(d) for d in data]

    def work(self):
        pairs = [(lab, layer) for lab in self.labels for layer in self.layers]
        out: list[ProbeResult] = []
        yield Tick(0, self.total)
        for i, (lab, layer) in enumerate(pairs):
            out.append(fit_probes(self.lm, self.dataset, layers=[layer], label=lab, options=self.options, **self.fit))
            yield Tick((i + 1) * self.units_per_fit, self.total, list(out))
        return out
