"""The filesystem layer on a local root: collections, atomic writes, failures and kills mid-write."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from cluster_assets.storage import STAGING_PREFIX, CollectionError, Storage, staging_name


def documents(start: int, count: int, tag: str = "v1") -> pa.Table:
    return pa.table({
        "document_id": [f"d{i}" for i in range(start, start + count)],
        "text": [f"{tag} text {i}" for i in range(start, start + count)],
        "vector": pa.array([[float(i), 1.0] for i in range(start, start + count)], pa.list_(pa.float32())),
    })


def test_collection_round_trip(storage):
    table = documents(0, 10)
    assert storage.write_collection("articles", table.schema, [table.slice(0, 4), table.slice(4)]) == 10
    assert storage.list_collections() == ["articles"]
    assert storage.collection_exists("articles") and not storage.collection_exists("other")
    read = pa.Table.from_batches(list(storage.iter_collection("articles")))
    assert read.equals(table)
    assert storage.uri("collections", "articles") == str(Path(storage.root).resolve() / "collections" / "articles")
    assert [Path(p).name for p in storage.collection_files("articles")] == ["part-0.parquet"]


def test_columns_are_selected_and_a_missing_one_is_named(storage):
    table = documents(0, 3)
    storage.write_collection("articles", table.schema, [table])
    batches = list(storage.iter_collection("articles", ["document_id"]))
    assert batches[0].schema.names == ["document_id"]
    with pytest.raises(CollectionError, match=r"collection 'articles' has no column 'embedding'; columns: document_id, text"):
        list(storage.iter_collection("articles", ["document_id", "embedding"]))


def test_a_missing_collection_is_named_with_its_place(storage):
    with pytest.raises(CollectionError) as caught:
        storage.collection_dataset("nowhere")
    assert "collection 'nowhere' not found" in str(caught.value)
    assert str(Path(storage.root).resolve() / "collections" / "nowhere") in str(caught.value)


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "/etc", ""])
def test_collection_ids_with_path_characters_never_touch_the_disk(storage, bad):
    with pytest.raises(ValueError, match="collection id"):
        storage.write_collection(bad, documents(0, 1).schema, [documents(0, 1)])
    with pytest.raises(ValueError, match="collection id"):
        storage.collection_files(bad)
    assert not (Path(storage.root).parent / "x").exists()


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_collection_written_by_another_tool_in_several_files_is_read_whole(storage):
    folder = Path(storage.root) / "collections" / "multi"
    folder.mkdir(parents=True)
    pq.write_table(documents(0, 5), folder / "a.parquet")
    pq.write_table(documents(5, 5), folder / "b.parquet")
    (folder / "_SUCCESS").write_text("")
    assert storage.collection_dataset("multi").count_rows() == 10
    before = file_hashes(folder)
    # a write through the storage layer never deletes a file it was not told it replaces
    storage.write_collection("multi", documents(0, 3).schema, [documents(10, 3, "v2")])
    assert [Path(p).name for p in storage.collection_files("multi")] == ["a.parquet", "b.parquet", "part-0.parquet"]
    after = file_hashes(folder)
    assert {name: after[name] for name in before} == before
    assert storage.collection_dataset("multi").count_rows() == 13


def test_a_rewrite_deletes_the_files_its_writer_names_once_the_new_file_is_complete(storage):
    folder = Path(storage.root) / "collections" / "multi"
    folder.mkdir(parents=True)
    pq.write_table(documents(0, 5), folder / "part-1.parquet")
    pq.write_table(documents(5, 5), folder / "user.parquet")
    storage.write_collection("multi", documents(0, 3).schema, [documents(0, 3, "v2")], replaces=["part-1.parquet"])
    assert [Path(p).name for p in storage.collection_files("multi")] == ["part-0.parquet", "user.parquet"]


def test_a_failing_multi_file_rewrite_leaves_every_old_file_byte_identical(storage):
    folder = Path(storage.root) / "collections" / "multi"
    folder.mkdir(parents=True)
    for i in range(3):
        pq.write_table(documents(i * 5, 5), folder / f"part-{i}.parquet")
    before = file_hashes(folder)

    def failing():
        yield documents(0, 10, "v2")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        storage.write_collection("multi", documents(0, 1).schema, failing(),
                                 replaces=["part-0.parquet", "part-1.parquet", "part-2.parquet"])
    assert file_hashes(folder) == before
    assert storage.collection_dataset("multi").count_rows() == 15


def test_a_rewritten_file_has_another_fingerprint_and_s3_times_are_kept_to_the_second(storage, monkeypatch):
    def fingerprint():
        [info] = storage.collection_file_infos("c")
        return storage.file_fingerprint(info)

    storage.write_collection("c", documents(0, 3).schema, [documents(0, 3)])
    before = fingerprint()
    time.sleep(0.01)
    storage.write_collection("c", documents(0, 4).schema, [documents(0, 4)])
    assert fingerprint() != before and fingerprint() == storage.file_fingerprint(storage.file_info("c", "part-0.parquet"))
    # S3-compatible stores may list milliseconds where HEAD answers in seconds: both read the same
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing is asked of it
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3 = Storage("s3://bucket/root")
    listed = pafs.FileInfo("bucket/root/x.parquet", pafs.FileType.File, mtime=1_795_700_293.789, size=10)
    headed = pafs.FileInfo("bucket/root/x.parquet", pafs.FileType.File, mtime=1_795_700_293, size=10)
    assert s3.file_fingerprint(listed) == s3.file_fingerprint(headed) == {"size": 10, "mtime_ns": 1_795_700_293 * 10**9}


def test_a_write_that_fails_midway_leaves_the_previous_collection_whole(storage):
    previous = documents(0, 20)
    storage.write_collection("target", previous.schema, [previous])
    before = (Path(storage.root) / "collections" / "target" / "part-0.parquet").read_bytes()

    def failing():
        yield documents(0, 10, "v2")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        storage.write_collection("target", previous.schema, failing())
    folder = Path(storage.root) / "collections" / "target"
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]  # the staging file is gone
    assert (folder / "part-0.parquet").read_bytes() == before
    assert storage.collection_dataset("target").to_table().equals(previous)


def test_a_write_killed_midway_leaves_the_previous_collection_whole(storage, tmp_path):
    previous = documents(0, 20)
    storage.write_collection("target", previous.schema, [previous])
    folder = Path(storage.root) / "collections" / "target"
    before = (folder / "part-0.parquet").read_bytes()
    started = tmp_path / "started"
    script = textwrap.dedent(f"""
        import time
        import pyarrow as pa
        from cluster_assets.storage import Storage

        def batches():
            for start in range(0, 10**9, 1000):
                yield pa.table({{
                    "document_id": [f"d{{i}}" for i in range(start, start + 1000)],
                    "text": ["v2"] * 1000,
                    "vector": pa.array([[1.0, 2.0]] * 1000, pa.list_(pa.float32())),
                }})
                if start == 3000:
                    open({str(started)!r}, "w").close()
                    time.sleep(600)

        schema = next(batches()).schema
        Storage({storage.root!r}).write_collection("target", schema, batches())
    """)
    writer = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert writer.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        staging = [p for p in folder.iterdir() if p.name.startswith(STAGING_PREFIX)]
        assert staging and staging[0].stat().st_size > 0  # the kill lands mid-write
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert (folder / "part-0.parquet").read_bytes() == before
    # the leftover staging file is invisible to readers
    assert [Path(p).name for p in storage.collection_files("target")] == ["part-0.parquet"]
    assert storage.collection_dataset("target").to_table().equals(previous)
    assert storage.list_collections() == ["target"]
    # and the next write succeeds over it, removing the dead writer's staging file
    storage.write_collection("target", previous.schema, [documents(0, 5, "v3")])
    assert storage.collection_dataset("target").count_rows() == 5
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]


def test_atomic_output_of_any_file(storage):
    storage.write_bytes(b"first", "assets", "x", "model.pkl")
    with pytest.raises(KeyError):
        with storage.atomic_output("assets", "x", "model.pkl") as stream:
            stream.write(b"half")
            raise KeyError("stop")
    assert storage.read_bytes("assets", "x", "model.pkl") == b"first"
    assert storage.list_dir("assets", "x") == ["model.pkl"]
    assert storage.exists("assets", "x", "model.pkl") and not storage.exists("assets", "x", "other")


def test_a_write_removes_only_the_staging_files_of_writes_no_longer_in_progress(storage):
    storage.write_bytes(b"first", "assets", "x", "model.pkl")
    folder = Path(storage.root) / "assets" / "x"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    live = folder / staging_name("model.pkl")  # this process: a write in progress
    dead = folder / staging_name("model.pkl").replace(f"-{os.getpid()}-", f"-{dead_pid}-", 1)
    other_host = folder / f"{STAGING_PREFIX}{'a' * 32}-{dead_pid}-elsewhere-model.pkl"
    old_other_host = folder / f"{STAGING_PREFIX}{'b' * 32}-{dead_pid}-elsewhere-model.pkl"
    old_unnamed = folder / f"{STAGING_PREFIX}{'c' * 32}-centroids.parquet"  # the name before writers were named
    for path in (live, dead, other_host, old_other_host, old_unnamed):
        path.write_bytes(b"partial")
    hour_and_a_bit = time.time() - 3700
    for path in (old_other_host, old_unnamed):
        os.utime(path, (hour_and_a_bit, hour_and_a_bit))
    outside = Path(storage.root) / "assets" / dead.name  # another folder is not swept
    outside.write_bytes(b"partial")

    storage.write_bytes(b"second", "assets", "x", "labels.pkl")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["labels.pkl", "model.pkl", live.name, other_host.name])
    assert outside.exists()
    # a write that fails sweeps nothing
    dead.write_bytes(b"partial")
    with pytest.raises(KeyError):
        with storage.atomic_output("assets", "x", "model.pkl") as stream:
            raise KeyError("stop")
    assert dead.exists() and storage.read_bytes("assets", "x", "model.pkl") == b"first"


@pytest.fixture(params=["local", "s3"])
def local_or_s3(request, storage) -> Storage:
    if request.param == "local":
        return storage
    import boto3

    request.getfixturevalue("moto_s3")
    boto3.client("s3").create_bucket(Bucket="store")
    return Storage("s3://store/root")


def test_child_folders_hold_every_file_under_them_and_their_newest_time(local_or_s3):
    storage = local_or_s3
    for parts in (("a", "x"), ("a", "sub", "y"), ("b", "z"), ("_staging", "q"), (".hidden", "q"), ("beside.txt",)):
        storage.write_bytes(b"1", "runs", *parts)
    if storage.scheme:
        import boto3

        listed = boto3.client("s3").list_objects_v2(Bucket="store", Prefix="root/runs/a/")["Contents"]
        newest_a = max(o["LastModified"].timestamp() for o in listed)
    else:
        for parts, when in ((("a", "x"), 2_000_000), (("a", "sub", "y"), 3_000_000), (("b", "z"), 1_000_000)):
            os.utime(storage.path("runs", *parts), (when, when))
        os.mkdir(storage.path("runs", "empty"))
        newest_a = 3_000_000

    folders = {f.name: f for f in storage.child_folders("runs")}
    assert sorted(folders) == (["a", "b"] if storage.scheme else ["a", "b", "empty"])
    assert sorted(folders["a"].files) == ["sub/y", "x"] and list(folders["b"].files) == ["z"]
    assert folders["a"].newest == pytest.approx(newest_a)
    if not storage.scheme:
        assert folders["b"].newest == 1_000_000 and folders["empty"].newest == 0.0
    assert storage.child_folders("nowhere") == []


def test_move_replaces_the_target_and_names_a_missing_source(local_or_s3):
    storage = local_or_s3
    storage.write_bytes(b"old model", "assets", "blobs", "model.pkl")
    storage.write_bytes(b"older", "assets", "blobs", "legacy", "model.pkl")
    storage.write_bytes(b"labels", "assets", "blobs", "labels.parquet")
    storage.move(("assets", "blobs", "model.pkl"), ("assets", "blobs", "legacy", "model.pkl"))
    storage.move(("assets", "blobs", "labels.parquet"), ("assets", "blobs", "new", "labels.parquet"))
    assert storage.read_bytes("assets", "blobs", "legacy", "model.pkl") == b"old model"
    assert storage.read_bytes("assets", "blobs", "new", "labels.parquet") == b"labels"
    assert storage.list_dir("assets", "blobs") == ["legacy", "new"]
    with pytest.raises(FileNotFoundError, match=re.escape(storage.path("assets", "blobs", "model.pkl"))):
        storage.move(("assets", "blobs", "model.pkl"), ("assets", "blobs", "again.pkl"))
    assert not storage.exists("assets", "blobs", "again.pkl")


def test_a_storage_that_has_written_to_s3_still_travels_to_other_processes(local_or_s3):
    """Writes and moves share one S3 client per Storage; a pickled copy (Ray tasks, process pools) makes its own."""
    import pickle

    storage = local_or_s3
    storage.write_bytes(b"one", "a", "x")
    storage.write_bytes(b"two", "a", "y")
    if storage.scheme:
        assert storage._boto3_client is not None
    copy = pickle.loads(pickle.dumps(storage))
    copy.write_bytes(b"three", "a", "z")
    assert [storage.read_bytes("a", n) for n in ("x", "y", "z")] == [b"one", b"two", b"three"]
