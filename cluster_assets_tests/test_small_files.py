"""Many small files: `collections append` refuses a file too small to be worth a partition, unless --allow-small."""

from __future__ import annotations

import pyarrow.parquet as pq
from click.testing import CliRunner

from cluster_assets.cli import main
from cluster_assets.cli.collections import MIN_APPEND_DOCUMENTS
from cluster_assets_tests.small import blobs_table, write_blobs


def test_append_refuses_a_small_file_unless_allowed_and_takes_a_partition_sized_one(tmp_path, storage):
    write_blobs(storage)
    small = tmp_path / "few.parquet"
    pq.write_table(blobs_table(per_blob=2, start=500), small)
    runner = CliRunner()
    refused = runner.invoke(main, ["collections", "append", "points", str(small)])
    assert refused.exit_code == 1
    assert (f"{small}: 6 documents, fewer than the {MIN_APPEND_DOCUMENTS} a file of collection 'points' should "
            "hold") in refused.output and "--allow-small" in refused.output
    assert storage.list_dir("collections", "points") == ["part-0.parquet"]

    allowed = runner.invoke(main, ["collections", "append", "points", str(small), "--allow-small"])
    assert allowed.exit_code == 0, allowed.output
    big = tmp_path / "many.parquet"
    per_blob = -(-MIN_APPEND_DOCUMENTS // 3)
    pq.write_table(blobs_table(per_blob=per_blob, start=1000), big)
    taken = runner.invoke(main, ["collections", "append", "points", str(big)])
    assert taken.exit_code == 0, taken.output
    assert storage.list_dir("collections", "points") == ["few.parquet", "many.parquet", "part-0.parquet"]
