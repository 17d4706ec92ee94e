"""One protocol for every analysis over a dataset: step, merge, finish.

Mining top patches, pooling features for probes and embeddings, scoring shape
bias and accumulating similarity statistics are all the same shape of
computation, the shape of Ray Data's ``AggregateFnV2`` (``aggregate_block``,
``combine``, ``finalize`` in ``ray/data/aggregate.py``):

- :meth:`DatasetPass.step` turns one batch of decoded images into a small
  *partial state* (per-channel top-k, pooled features of a few taps, per-image
  decisions, HSIC sums, ...). It never keeps a full activation map;
- :meth:`DatasetPass.merge` combines two partial states. It must be associative
  and exact (and order-independent where ties are broken by dataset index), so a
  pass split over batches, processes or machines gives the same result as one loop;
- :meth:`DatasetPass.finish` turns the merged state into the analysis' result.

Backends run a pass over a dataset: ``local`` (:class:`PassRun`, a streaming loop
in this process, the default: no Ray import and no start-up cost) and ``ray``
(:mod:`vizcore.distributed`, Ray Data with an actor pool). Progress, stop and
resume are implemented once, for every analysis, by the job layer above (:mod:`vizcore.jobs`:
one options object, caching, one stop rule, :class:`vizcore.jobs.Stopped`).

Batches are consecutive runs of ``batch_size`` dataset indices (an unreadable
image leaves its batch one image short), on every backend, so an analysis that
depends on how images are grouped (minibatch CKA) gives the same result anywhere.

A pass object holds plain, picklable settings and a :class:`ModelRef` per model;
the models themselves are loaded lazily in the process that runs :meth:`step`
(once per Ray actor), so a pass can be shipped to workers.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, Sequence, TypeVar

if TYPE_CHECKING:
    import torch

    from vizcore.data.datasets import ImageDataset
    from vizcore.models import LoadedModel

S = TypeVar("S")  # partial state
R = TypeVar("R")  # result

Progress = Callable[[int, int], None]
"""``progress(images_done, images_total)``, called after every batch, on every backend."""

ENGINES = ("local", "ray")


class NoImagesError(ValueError):
    """No image of the dataset could be decoded; the message gives the first few reasons."""


def no_images_error(dataset_name: str, skipped: Sequence[dict], n: int = 3) -> NoImagesError:
    reasons = "; ".join(f"{s.get('file', '?')}: {s.get('error', '?')}" for s in list(skipped)[:n])
    more = f" (and {len(skipped) - n} more)" if len(skipped) > n else ""
    return NoImagesError(f"no image of {dataset_name} could be read ({len(skipped)} unreadable): "
                         f"{reasons}{more}")


# ------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class ModelRef:
    """How to load a model in any process: registry name and the ``weights`` argument of
    :func:`vizcore.models.load_model` (``auto``, ``random``, ``random:SEED`` or a checkpoint path)."""

    name: str
    weights: str = "auto"

    @classmethod
    def of(cls, lm: "LoadedModel") -> "ModelRef":
        return cls(lm.spec.name, getattr(lm, "weights_arg", None) or _weights_arg(lm))

    def load(self) -> "LoadedModel":
        import warnings

        from vizcore.models import load_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the weight-source warning was shown where the pass was made
            return load_model(self.name, self.weights, progress=False)


def _weights_arg(lm: "LoadedModel") -> str:
    w = lm.weights
    if w.source == "file":
        return w.detail
    if w.source == "random":
        return f"random:{w.detail.split()[-1]}" if w.detail.startswith("seed") else "random"
    return "auto"


# ------------------------------------------------------------------------------ protocol
class DatasetPass(ABC, Generic[S, R]):
    """One analysis over a dataset. Subclasses set :attr:`kind` and implement the four verbs.

    Construct it with loaded models (``LoadedModel``) for local use; it keeps
    :class:`ModelRef` s so that a copy unpickled elsewhere reloads them on first use.
    """

    kind: ClassVar[str] = "pass"

    def __init__(self, models: dict[str, "LoadedModel"]):
        self.refs = {k: ModelRef.of(lm) for k, lm in models.items()}
        self._models: dict[str, LoadedModel] | None = dict(models)

    # -- models, loaded once per process
    def model(self, key: str) -> "LoadedModel":
        if self._models is None:
            self._models = {}
        if key not in self._models:
            self._models[key] = self.refs[key].load()
        return self._models[key]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_models"] = None  # reloaded from the refs where the pass lands
        return state

    # -- the protocol
    @abstractmethod
    def transform(self) -> Callable[[Any], Any]:
        """PIL image -> the input of :meth:`step` for one image (a tensor, or a tuple of tensors
        when several models preprocess the same image differently). Runs in loader workers."""

    @abstractmethod
    def empty(self) -> S:
        """The state of no images (the identity of :meth:`merge`)."""

    @abstractmethod
    def step(self, x: "torch.Tensor | tuple[torch.Tensor, ...]", indices: Sequence[int]) -> S:
        """The partial state of one batch: ``x`` stacked from :meth:`transform`, ``indices`` the
        dataset indices of its rows."""

    @abstractmethod
    def merge(self, a: S, b: S) -> S:
        """Combine two partial states; associative and exact."""

    @abstractmethod
    def finish(self, state: S, info: "PassInfo") -> R:
        """The result of the merged state of every batch (``info.complete`` says if it is all)."""


@dataclass
class PassInfo:
    """What a run saw: images decoded, the unreadable ones, how far it got, how long it took."""

    dataset: "ImageDataset"
    total: int
    n_images: int = 0
    skipped: list[dict] = field(default_factory=list)
    complete: bool = False
    seconds: float = 0.0
    engine: str = "local"
    startup_seconds: float = 0.0  # engine start-up (Ray: connecting or starting it, the actor pool), not in seconds

    @property
    def done(self) -> int:
        return self.n_images + len(self.skipped)


def batches_of(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """The batches of a run: consecutive runs of ``batch_size`` of ``indices``, on every backend."""
    idx = [int(i) for i in indices]
    return [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]


def decode_batch(transform: Callable[[Any], Any], files: Sequence[tuple[int, str]]
                 ) -> tuple[Any, list[int], list[dict]]:
    """Decode one batch in this thread: ``(x stacked, indices decoded, skipped records)``.

    ``x`` is ``None`` when no file of the batch could be read. The same decoding and
    collation as :func:`vizcore.data.iter_batches`, for backends that decode where they compute.
    """
    from vizcore.data.datasets import _collate
    from vizcore.data.images import ImageLoadError, load_image

    rows = []
    for i, path in files:
        try:
            rows.append((transform(load_image(path)), i, ""))
        except (ImageLoadError, OSError) as e:
            rows.append((None, i, str(e) or type(e).__name__))
    x, ok, bad = _collate(rows)
    paths = dict(files)
    return x, ok, [{"file": paths[i], "error": err} for i, err in bad]


# ------------------------------------------------------------------------------ local backend
class PassRun(Generic[S, R]):
    """A pass over a dataset in this process, advanced a few batches at a time.

    The job layer (:mod:`vizcore.jobs`) drives it: the dashboard a few batches per script run
    (to show progress and stay responsive to Stop), :func:`vizcore.jobs.run` to the end.
    Stopping keeps the state, so a later :meth:`step` resumes where it left off.

    Args:
        p: the pass.
        dataset: the images.
        batch_size: images per batch (consecutive dataset indices).
        workers: decoding processes (see :func:`vizcore.data.iter_batches`; 0 decodes in this thread).
        indices: run over these dataset indices only (in this order), e.g. one part to merge later.
    """

    def __init__(self, p: DatasetPass[S, R], dataset: "ImageDataset", *, batch_size: int = 32,
                 workers: int | None = None, indices: Sequence[int] | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.p, self.dataset, self.batch_size, self.workers = p, dataset, int(batch_size), workers
        self.indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
        self.state: S = p.empty()
        self.pos = 0  # indices done (decoded or skipped); always a multiple of batch_size until the end
        self.info = PassInfo(dataset, total=len(self.indices))
        self._t_first: float | None = None

    @property
    def total(self) -> int:
        return len(self.indices)

    @property
    def done(self) -> bool:
        return self.pos >= self.total

    def rate(self) -> float | None:
        """Images per second since the first batch of this run, or ``None`` before it."""
        if self._t_first is None or self.info.seconds <= 0:
            return None
        return self.pos / self.info.seconds

    def eta(self) -> float | None:
        """Seconds left at the measured rate, or ``None`` before the first batch."""
        r = self.rate()
        return None if not r else (self.total - self.pos) / r

    def step(self, max_batches: int | None = None, *, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> bool:
        """Run up to ``max_batches`` more batches (all that are left when ``None``).

        ``should_stop`` is asked before each batch is read, so a stopped run reports only
        what it did. Returns :attr:`done`.
        """
        from vizcore.data.datasets import iter_batches

        if self.done:
            return True
        end = self.total if max_batches is None else min(self.total, self.pos + max_batches * self.batch_size)
        chunk = self.indices[self.pos:end]
        start = self.pos
        t0 = time.perf_counter()
        self._t_first = self._t_first or t0
        n_skipped = len(self.info.skipped)
        batches = iter_batches(self.dataset.subset(chunk), self.p.transform(), batch_size=self.batch_size,
                               workers=self.workers, report=_Report(self.info, chunk, self.dataset))
        try:
            while True:
                if should_stop is not None and should_stop():
                    break
                try:
                    x, local = next(batches)
                except StopIteration:
                    self.pos = end
                    break
                part = self.p.step(x, [chunk[j] for j in local])
                self.state = self.p.merge(self.state, part)
                self.info.n_images += len(local)
                # Batches are consecutive runs of the chunk: everything before this batch's end is done
                # (a batch of unreadable files only shows up in the skipped list).
                self.pos = min(end, start + (local[-1] // self.batch_size + 1) * self.batch_size)
                self.info.seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                if progress is not None:
                    progress(self.pos, self.total)
        finally:
            batches.close()  # ends the loader (and its worker processes) now
            self.info.seconds += time.perf_counter() - t0
        if self.done and len(self.info.skipped) != n_skipped and progress is not None:
            progress(self.pos, self.total)
        self.info.complete = self.done
        return self.done

    def result(self) -> R:
        """The result so far (``info.complete`` is false until every image is done)."""
        self.info.complete = self.done
        return self.p.finish(self.state, self.info)


class _Report:
    """Adapter: :func:`iter_batches` appends skipped files here, straight into the run's info."""

    def __init__(self, info: PassInfo, chunk: Sequence[int], dataset: "ImageDataset"):
        self.info, self.chunk, self.dataset = info, chunk, dataset
        self.n_ok = 0

    @property
    def skipped(self) -> list[dict]:
        return self.info.skipped

    @skipped.setter
    def skipped(self, value: list[dict]) -> None:
        self.info.skipped[:] = value
