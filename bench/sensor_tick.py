"""The event sensor's quiet tick over a collection of many files: what a tick costs when nothing changed.

    PYTHONPATH=. .venv/bin/python bench/sensor_tick.py --files 2000 --repeats 5 [--s3]

A collection of ``--files`` small Parquet files is clustered once (plain stage calls, every file
registered as a partition); then the event sensor is evaluated as the daemon would, alternating a
tick without a cursor (every registered file's assignments footer is read to see whether its
source was rewritten) and a tick with the cursor the quiet tick left (the listings alone).
``--s3`` puts the storage in moto's S3 server on loopback, where each footer is a request.
Prints the medians as JSON.

    PYTHONPATH=. .venv/bin/python bench/sensor_tick.py --drift --files 200 --clusters 50 --dim 384 --repeats 7 [--s3]

``--drift`` measures instead the drift check of a tick that is not skipped (``changes.new_files_drift``)
over ``--files`` files assigned since the fit, each with stats of ``--clusters`` clusters (and noise) of
``--dim`` dimensions, in rotating order: ``before``, the reads the check made before footers held a readout
(each file asked for, then read in full); ``fallback``, the check now over the same stats written without a
readout (footer, then the full read); ``footers``, the check now (each file's footer alone).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--per-file", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--s3", action="store_true")
    parser.add_argument("--drift", action="store_true")
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server, root = storage_root(tmp, args.s3)
        try:
            print(json.dumps(drift_read(args, root) if args.drift else quiet_tick(args, tmp, root)))
        finally:
            if server:
                server.stop()


def storage_root(tmp: str, s3: bool):
    """(moto's server or None, the storage root): a folder, or a bucket of moto's S3 on loopback."""
    if not s3:
        return None, os.path.join(tmp, "storage")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    return server, "s3://bench/storage"


def quiet_tick(args, tmp: str, root: str) -> dict:
    import dagster as dg
    import numpy as np
    import pyarrow as pa

    from cluster_assets import partitions
    from cluster_assets.loader import build_defs
    from cluster_assets.resources import StorageResource
    from cluster_assets.spec import load_definitions
    from cluster_assets.stages import run_plain
    from cluster_assets.storage import Storage

    storage = Storage(root)
    rng = np.random.default_rng(0)
    for f in range(args.files):
        X = rng.normal(f % 3 * 5.0, 0.3, size=(args.per_file, 8)).astype(np.float32)
        table = pa.table({"document_id": [f"d{f}-{i}" for i in range(args.per_file)],
                          "text": [f"item {i}" for i in range(args.per_file)],
                          "vec": pa.array(list(X), pa.list_(pa.float32()))})
        storage.write_table(table, "collections", "many", f"part-{f:05d}.parquet")
    folder = Path(tmp) / "clusters"
    folder.mkdir()
    (folder / "many.json").write_text(json.dumps({
        "cluster_name": "many", "source_collection_ids": ["many"], "feature_addresses": ["vec"],
        "algorithm": "kmeans", "algorithm_config": {"num_clusters": 3},
        "triggers": [{"type": "event", "name": "on_arrival", "min_new_documents": 10}]}))
    spec = load_definitions(folder)[0][0].spec
    instance = dg.DagsterInstance.ephemeral()
    partitions.sync_partitions(instance, storage, spec)
    start = time.perf_counter()
    run_plain(storage, spec, "fit", until="labels")
    fit_s = time.perf_counter() - start
    sensor = build_defs(folder).resolve_sensor_def("many__on_arrival")

    def tick(cursor):
        context = dg.build_sensor_context(cursor=cursor, instance=instance,
                                          resources={"storage": StorageResource(root=root)})
        t = time.perf_counter()
        result = sensor.evaluate_tick(context)
        return time.perf_counter() - t, result

    _, first = tick(None)
    assert not first.run_requests and first.cursor, first.skip_message
    full, quiet = [], []
    for _ in range(args.repeats):
        seconds, result = tick(None)
        full.append(seconds)
        seconds, result = tick(first.cursor)
        assert "nothing changed" in result.skip_message, result.skip_message
        quiet.append(seconds)
    return {"files": args.files, "storage": "s3 (moto)" if args.s3 else "local", "fit_s": round(fit_s, 2),
            "tick_without_cursor_s": round(statistics.median(full), 3),
            "tick_with_cursor_s": round(statistics.median(quiet), 3),
            "ratio": round(statistics.median(full) / statistics.median(quiet), 1)}


def drift_read(args, root: str) -> dict:
    import numpy as np
    import pyarrow as pa

    from cluster_assets.changes import new_files_drift
    from cluster_assets.quality import ClusterStats, Readout
    from cluster_assets.spec import parse_definition
    from cluster_assets.stages import layout
    from cluster_assets.stages.assign import read_centroids, stats_table
    from cluster_assets.storage import Storage

    storage = Storage(root)
    spec = parse_definition({"cluster_name": "drift", "source_collection_ids": ["many"], "feature_addresses": ["vec"],
                             "algorithm": "kmeans", "algorithm_config": {"num_clusters": args.clusters}})
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(args.clusters, args.dim)).astype(np.float32)
    clusters = pa.table({"cluster_id": pa.array(range(args.clusters), pa.int32()),
                         "count": pa.array([1] * args.clusters, pa.int64()),
                         "centroid": pa.FixedSizeListArray.from_arrays(pa.array(centroids.reshape(-1)), args.dim)})
    fits = {"footers": None, "full": None}  # one fit's stats carry readouts, the other's do not
    for fit_id in fits:
        storage.write_table(clusters, *layout.fit_parts(spec, fit_id, layout.CLUSTERS))
        fits[fit_id] = read_centroids(storage, spec, fit_id)
    files = [layout.partition_key("many", f"part-{f:05d}.parquet") for f in range(args.files)]
    labels = np.arange(4 * (args.clusters + 1)) % (args.clusters + 1) - 1  # every cluster and noise
    for partition in files:
        stats = ClusterStats().update(rng.normal(size=(len(labels), args.dim)).astype(np.float32), labels)
        for fit_id, fit_centroids in fits.items():
            storage.write_table(stats_table(stats, 0, fit_centroids if fit_id == "footers" else None),
                                *layout.file_parts(spec, fit_id, partition, layout.STATS))
    stats_bytes = sum(storage.fs.get_file_info(storage.path(*layout.file_parts(spec, "full", p, layout.STATS))).size
                      for p in files)
    # a fit more cohesive than random vectors: the check reports the new files' cohesion, which every read must agree on
    current = {fit_id: layout.CurrentFit(fit_id, "sample", partitions=[], cohesion=1.0, noise_share=0.0)
               for fit_id in fits}

    def before():
        """The check's reads as they were before readouts: the centroids, then each file asked for and read in full."""
        found = read_centroids(storage, spec, "full")
        stats = ClusterStats()
        for p in files:
            parts = layout.file_parts(spec, "full", p, layout.STATS)
            if storage.exists(*parts):
                stats.merge(ClusterStats.from_table(storage.read_table(*parts)))
        return Readout.of(stats, found.by_id)

    variants = {"before": before,
                "fallback": lambda: new_files_drift(storage, spec, current["full"], set(files)),
                "footers": lambda: new_files_drift(storage, spec, current["footers"], set(files))}
    seconds = {name: [] for name in variants}
    for repeat in range(args.repeats):
        names = list(variants)
        outcomes = {}
        for name in names[repeat % 3:] + names[:repeat % 3]:  # rotating order
            t = time.perf_counter()
            outcomes[name] = variants[name]()
            seconds[name].append(time.perf_counter() - t)
        assert outcomes["footers"] == outcomes["fallback"], outcomes
        assert f"cohesion {outcomes['before'].cohesion:.3f} against" in outcomes["footers"], outcomes
    median = {name: statistics.median(s) for name, s in seconds.items()}
    return {"files": args.files, "clusters": args.clusters, "dim": args.dim, "repeats": args.repeats,
            "storage": "s3 (moto)" if args.s3 else "local", "stats_mb": round(stats_bytes / 2**20, 1),
            **{f"{name}_s": round(m, 3) for name, m in median.items()},
            "before_over_footers": round(median["before"] / median["footers"], 1)}

if __name__ == "__main__":
    main()
