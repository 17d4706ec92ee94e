"""A precompute on a real Ray cluster of three nodes on this machine, with a node removed in the middle.

Ray's own ``ray.cluster_utils.Cluster`` starts a head and two worker nodes as separate
processes (each its own raylet and workers). The feature-visualisation batches go to two
actors; once the first batch is back, the worker node running an actor is removed (its
processes are killed). The actor is restarted on a node with a free CPU and its batch is
retried (``max_restarts=-1, max_task_retries=-1``), and the final images are byte for byte
those of a local run with the same torch thread count.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from vizcore import precompute as P
from vizcore.jobs import RunOptions

ROOT = Path(__file__).resolve().parents[1]
LAYER = "blocks.1.0"  # 24 channels
SETTINGS = P.PrecomputeSettings(featviz_steps=8, featviz_size=32, featviz_batch=2, k=1)
PARTS = ("feature visualisation",)


def _pngs(p: P.Plan) -> list[bytes]:
    from vizcore import cache

    out = []
    for job in p.featviz_jobs(LAYER):
        entry = cache.load_torch(job.kind, job.key())
        assert entry is not None, f"batch {job.channels} missing"
        out += entry["png"]
    return out


def _busy_worker(cluster, ray):
    """The worker node (not the head) where an actor holds a CPU.

    ``available_resources_per_node`` is Ray's private state API; the public one
    (``ray.util.state``) needs the dashboard, which these tests never start."""
    from ray._private.state import available_resources_per_node

    free = available_resources_per_node()
    for node in cluster.worker_nodes:
        if free.get(node.node_id, {}).get("CPU", 0.0) < 1.0:
            return node
    return None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_precompute_on_a_cluster_survives_a_lost_node(lite0, tmp_path, monkeypatch):
    import ray
    import torch
    from ray.cluster_utils import Cluster

    from vizcore.data import open_dataset

    ds = open_dataset("samples")
    p = P.plan(lite0, ds, [LAYER], SETTINGS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the actors use the driver's thread count: same bits
    try:
        monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "local"))
        P.precompute(p, RunOptions(workers=0), parts=PARTS)
        local = _pngs(p)

        # Node processes inherit the environment: the worktree's vizcore, and this cache.
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        monkeypatch.setenv("VIZCORE_RAY_ACTORS", "2")
        monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cluster"))
        marker = Path("/tmp/ray/ray_current_cluster")
        before = marker.read_text() if marker.is_file() else None
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        removed: list[str] = []
        remover: list[threading.Thread] = []
        try:
            for _ in range(2):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()

            def remove_busy_worker() -> None:
                node = _busy_worker(cluster, ray)
                if node is not None:
                    removed.append(node.node_id)
                    cluster.remove_node(node, allow_graceful=False)

            def progress(part: str, done: int, total: int) -> None:
                # after the first batch is back, lose a node (in a thread: the driver keeps collecting)
                if done >= 2 and not remover:
                    remover.append(threading.Thread(target=remove_busy_worker, daemon=True))
                    remover[0].start()

            report = P.precompute(p, RunOptions(engine="ray", ray_address=cluster.address), parts=PARTS,
                                  progress=progress)
            for t in remover:
                t.join(timeout=120)
            assert report.parts["feature visualisation"]["jobs"] == 12
            assert report.parts["feature visualisation"]["from_cache"] == 0
            assert len(removed) == 1, "no worker node held an actor when the first batch came back"
            assert P.status(p, LAYER).done["feature visualisation"] == 24
            assert _pngs(p) == local  # byte-identical to the local run
        finally:
            for t in remover:
                t.join(timeout=120)
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()
            if marker.is_file() and marker.read_text() != before and before is None:
                marker.unlink()
    finally:
        torch.set_num_threads(threads)
