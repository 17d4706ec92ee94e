"""RelMax (:class:`vizcore.relevance.RelMaxJob`) and the concept passes (:class:`vizcore.concepts.VectorJob`,
:class:`vizcore.concepts.ConceptCropsJob`) on a local Ray give what they give locally: the same passes,
split into batches on Ray's workers and merged, with the bundled EfficientNet-Lite0 on 16 ImageNet samples."""
from __future__ import annotations

import numpy as np
import pytest

from vizcore.jobs import RunOptions, run

LOCAL = RunOptions(batch_size=8, workers=0, cache=False)
RAY = RunOptions(batch_size=8, engine="ray", cache=False)
EARLY = "blocks.2.0"


@pytest.mark.slow
def test_relmax_and_concept_passes_on_a_local_ray_equal_local(lite0, imagenet_samples, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from vizcore.concepts import ConceptCropsJob, ConceptsJob, VectorJob
    from vizcore.data import open_dataset
    from vizcore.distributed import init_ray, shutdown_ray
    from vizcore.relevance import RelMaxJob

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    ds = open_dataset(str(imagenet_samples)).subset(range(0, 160, 10))
    rel_local = run(RelMaxJob(lite0, ds, EARLY, k=4), LOCAL)
    vec_local = run(VectorJob(lite0, ds, EARLY, per_image=8), LOCAL)
    concepts = run(ConceptsJob(lite0, ds, EARLY, 4, per_image=8, sweep=[4], options=LOCAL), LOCAL)
    crops_local = run(ConceptCropsJob(lite0, ds, concepts, 3), LOCAL)
    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2, object_store_mb=256)
    try:
        rel = run(RelMaxJob(lite0, ds, EARLY, k=4), RAY)
        vec = run(VectorJob(lite0, ds, EARLY, per_image=8), RAY)
        crops = run(ConceptCropsJob(lite0, ds, concepts, 3), RAY)
    finally:
        shutdown_ray()
    assert rel.n_images == rel_local.n_images == 16 and rel.complete
    for f in ("rel_images", "act_images"):
        assert np.array_equal(getattr(rel, f), getattr(rel_local, f)), f
    for f in ("rel_values", "act_values"):
        np.testing.assert_allclose(getattr(rel, f), getattr(rel_local, f), rtol=1e-4, atol=1e-6)
    assert (rel.rel_values[:, 0] > 0).any()  # some channel carries relevance: not an all-zero result
    assert vec.n_images == 16 and vec.vectors.shape == vec_local.vectors.shape == (16 * 8, 40)
    assert np.array_equal(vec.image, vec_local.image) and np.array_equal(vec.position, vec_local.position)
    np.testing.assert_allclose(vec.vectors, vec_local.vectors, rtol=1e-5, atol=1e-6)
    key = [[(h.index, h.y, h.x, h.box) for h in hits] for hits in crops_local.layers[EARLY]]
    assert [[(h.index, h.y, h.x, h.box) for h in hits] for hits in crops.layers[EARLY]] == key
    assert len(key) == 4 and all(len(r) == 3 for r in key)
    np.testing.assert_allclose([[h.value for h in hits] for hits in crops.layers[EARLY]],
                               [[h.value for h in hits] for hits in crops_local.layers[EARLY]], rtol=1e-4)
