"""The event sensor's quiet tick over a collection of many files: what a tick costs when nothing changed.

    PYTHONPATH=. .venv/bin/python bench/sensor_tick.py --files 2000 --repeats 5 [--s3]

A collection of ``--files`` small Parquet files is clustered once (plain stage calls, every file
registered as a partition); then the event sensor is evaluated as the daemon would, alternating a
tick without a cursor (every registered file's assignments footer is read to see whether its
source was rewritten) and a tick with the cursor the quiet tick left (the listings alone).
``--s3`` puts the storage in moto's S3 server on loopback, where each footer is a request.
Prints the medians as JSON.
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
    args = parser.parse_args()

    import dagster as dg
    import numpy as np
    import pyarrow as pa

    from cluster_assets import partitions
    from cluster_assets.loader import build_defs
    from cluster_assets.resources import StorageResource
    from cluster_assets.spec import load_definitions
    from cluster_assets.stages import run_plain
    from cluster_assets.storage import Storage

    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "storage")
        server = None
        if args.s3:
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
            server.start()
            host, port = server.get_host_and_port()
            os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                              AWS_ENDPOINT_URL=f"http://{host}:{port}")
            import boto3

            boto3.client("s3").create_bucket(Bucket="bench")
            root = "s3://bench/storage"
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
        if server:
            server.stop()
    print(json.dumps({"files": args.files, "storage": "s3 (moto)" if args.s3 else "local", "fit_s": round(fit_s, 2),
                      "tick_without_cursor_s": round(statistics.median(full), 3),
                      "tick_with_cursor_s": round(statistics.median(quiet), 3),
                      "ratio": round(statistics.median(full) / statistics.median(quiet), 1)}))


if __name__ == "__main__":
    main()
