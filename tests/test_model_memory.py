"""The process-wide model cache stays within ``VIZCORE_MODEL_MEMORY_MB``: least recently used
models are evicted and released, a model too big for the budget alone is refused before any
weights are read, and the dashboard uses the same cache (no second, unbounded one)."""
from __future__ import annotations

import gc
import os
import weakref

import pytest

from vizcore.models import ModelTooLargeError, clear_cache, load_model, loaded_models
from vizcore.models import loading


@pytest.fixture
def budget(monkeypatch):
    """An empty model cache with a small budget; the session's cached models come back afterwards."""
    saved = (dict(loading._CACHE), dict(loading._SIZES))
    clear_cache()

    def set_mb(mb: float) -> None:
        monkeypatch.setenv("VIZCORE_MODEL_MEMORY_MB", str(mb))

    yield set_mb
    clear_cache()
    with loading._CACHE_LOCK:
        loading._CACHE.update(saved[0])
        loading._SIZES.update(saved[1])


def _cached_mb() -> float:
    return sum(m["mb"] for m in loaded_models())


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_least_recently_used_is_evicted_within_budget(budget):
    budget(100)
    # Parameters + buffers: resnet18 44.6 MB, mobilenet_v2 13.5, densenet121 30.8,
    # mobilenet_v3_small 9.7, mobilenet_v3_large 21.0.
    for name in ("resnet18", "mobilenet_v2", "densenet121"):
        load_model(name, "random")
        assert _cached_mb() <= 100
    first = load_model("resnet18", "random")  # a hit: now the most recently used
    load_model("mobilenet_v3_small", "random")
    assert [m["name"] for m in loaded_models()] == ["mobilenet_v2", "densenet121", "resnet18",
                                                     "mobilenet_v3_small"]
    load_model("mobilenet_v3_large", "random")  # 98.6 + 21 > 100: the two oldest go
    assert [m["name"] for m in loaded_models()] == ["resnet18", "mobilenet_v3_small", "mobilenet_v3_large"]
    assert _cached_mb() <= 100
    assert load_model("resnet18", "random") is first  # still cached: no rebuild


def test_evicted_models_are_released(budget):
    budget(60)
    lm = load_model("resnet18", "random")
    ref = weakref.ref(lm.model)
    del lm
    load_model("mobilenet_v2", "random")
    gc.collect()
    assert ref() is not None, "resnet18 + mobilenet_v2 fit in 60 MB: nothing should be evicted yet"
    load_model("densenet121", "random")  # 44.6 + 13.5 + 30.8 > 60: resnet18 goes
    gc.collect()
    assert [m["name"] for m in loaded_models()] == ["mobilenet_v2", "densenet121"]
    assert ref() is None, "the evicted model is still referenced"


def test_too_large_for_the_budget_is_refused_before_building(budget, monkeypatch):
    budget(100)
    kept = load_model("mobilenet_v2", "random")
    built = []
    monkeypatch.setattr(loading, "build", lambda *a, **k: built.append(a) or pytest.fail("built"))
    with pytest.raises(ModelTooLargeError, match=r"alexnet needs 233 MB .* budget of 100 MB \(VIZCORE_MODEL_MEMORY_MB\)"):
        load_model("alexnet", "random")
    assert not built
    assert [m["name"] for m in loaded_models()] == ["mobilenet_v2"]  # nothing evicted for it
    assert load_model("mobilenet_v2", "random") is kept


def test_bad_budget_is_one_clear_line(budget):
    budget("lots")
    with pytest.raises(ValueError, match="VIZCORE_MODEL_MEMORY_MB must be a number of MB, not 'lots'"):
        load_model("mobilenet_v2", "random")


@pytest.mark.slow
def test_memory_stays_flat_over_many_models(budget):
    """Twelve different random-init resnet18s (44.6 MB each) under a 100 MB budget: without
    eviction the process would grow by ~500 MB; with it, RSS stays near its level after three."""
    budget(100)
    rss = []
    for seed in range(12):
        load_model("resnet18", f"random:{seed}")
        assert _cached_mb() <= 100
        assert len(loaded_models()) <= 2
        gc.collect()
        rss.append(_rss_mb())
    growth = max(rss[3:]) - rss[2]
    assert growth < 120, f"RSS grew by {growth:.0f} MB after the cache was full: {[round(r) for r in rss]}"


def test_dashboard_uses_the_engine_cache(budget):
    """``get_model`` is no st.cache_resource: what the engine evicts, the dashboard lets go."""
    from dashboard.widgets.models import get_model

    budget(50)
    lm = get_model("resnet18", "random")
    assert lm is load_model("resnet18", "random")
    assert not hasattr(get_model, "clear"), "get_model must not keep its own (unbounded) cache"
    ref = weakref.ref(lm.model)
    del lm
    get_model("mobilenet_v2", "random")
    get_model("densenet121", "random")  # 44.6 + 13.5 + 30.8 > 50
    gc.collect()
    assert ref() is None
    assert _cached_mb() <= 50


@pytest.mark.slow
def test_random_init_twins_count_against_the_budget(budget, tmp_path, monkeypatch):
    """Probing a trained model and its random-init twin under a budget that fits only one: the twin
    comes from load_model("...", "random:SEED") and evicts the older trained model, so the cache
    never holds more than the budget; the probes page asks the same cache for its twins."""
    import numpy as np
    from PIL import Image

    from vizcore.data import image_folder
    from vizcore.models.memory import module_bytes
    from vizcore.probes import fit_probes

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for cls, base in (("warm", (200, 60, 40)), ("cool", (40, 80, 200))):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(6):
            px = np.clip(np.array(base) + rng.integers(-30, 30, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(tmp_path / "data" / cls / f"{i}.png")
    ds = image_folder(tmp_path / "data")
    trained = load_model("efficientnet_lite0")
    mb = module_bytes(trained.model) / 2**20
    budget(1.5 * mb)  # room for one lite0, not two
    trained = load_model("efficientnet_lite0")  # cached again under the new budget
    res = fit_probes(trained, ds, layers=["blocks.2.0", "head"], compare_random=True, random_seed=3,
                     test_size=0.5, batch_size=8, workers=0, groups=None)
    assert res.random is not None and res.random.weights.source == "random"
    assert [(m["name"], m["weights"]) for m in loaded_models()] == [("efficientnet_lite0", "random:3")]
    assert _cached_mb() <= 1.5 * mb
    twin = load_model("efficientnet_lite0", "random:3")  # the twin the probes used: a cache hit, same weights
    from vizcore.identity import weights_identity

    assert twin.weights_arg == "random:3" and weights_identity(twin) != weights_identity(trained)
    # The probes page's twin is the same cached model (no per-session copy).
    assert "random_twin" not in vars(__import__("vizcore.features", fromlist=["x"]))
