"""The event sensor's drift check reads each new file's readout from its stats footer: the same numbers as
the full per-cluster stats, on the digits; files without a readout (or with a stale one) are read in full."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from cluster_assets import changes
from cluster_assets.demo import digits_table
from cluster_assets.quality import ClusterStats, Readout
from cluster_assets.spec import parse_definition
from cluster_assets.stages import layout, run_plain
from cluster_assets.stages.assign import READOUT_META, assign_file, read_centroids
from cluster_assets.storage import Storage

FIT_FILES = ["digits/part-0.parquet"]
NEW_FILES = ["digits/part-1.parquet", "digits/part-2.parquet", "digits/part-3.parquet"]


def digits_spec():
    # hdbscan on the raw pixels leaves documents as noise: the noise share is part of the readout
    return parse_definition({
        "cluster_name": "drift", "source_collection_ids": ["digits"], "feature_addresses": ["pixels"],
        "algorithm": "hdbscan", "cluster_space": {"method": "none"}, "sample_size": 600,
        "dimension_reduction": {"method": "pca", "components": 2},
    })


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The digits in four files: a fit over the first, the other three assigned with it afterwards."""
    root = tmp_path_factory.mktemp("drift") / "storage"
    storage, spec = Storage(root), digits_spec()
    table = digits_table()
    for i, rows in enumerate(np.array_split(np.arange(table.num_rows), 4)):
        if i == 1:  # the fit sees only the first file
            run_plain(storage, spec, "fit", until="labels")
        storage.write_table(table.take(rows), "collections", "digits", f"part-{i}.parquet")
    centroids = read_centroids(storage, spec, "fit")  # the assignments stage reads them once for its files
    for partition in NEW_FILES:
        assign_file(storage, spec, "fit", partition, centroids=centroids)
    return root


@pytest.fixture
def storage(fitted, tmp_path):
    """A copy of the fitted storage each test may change."""
    shutil.copytree(fitted, tmp_path / "storage")
    return Storage(tmp_path / "storage")


def full_readout(storage, spec, files, centroids):
    """What the drift check computed before readouts were recorded: every file's per-cluster stats, merged."""
    stats = ClusterStats()
    for p in files:
        stats.merge(ClusterStats.from_table(storage.read_table(*layout.file_parts(spec, "fit", p, layout.STATS))))
    return Readout.of(stats, centroids.by_id)


class _Spied:
    """A Parquet file whose full reads are recorded."""

    def __init__(self, file, name, read):
        self._file, self._name, self._read = file, name, read

    def __getattr__(self, attr):
        return getattr(self._file, attr)

    def read(self, *args, **kwargs):
        self._read.append(self._name)
        return self._file.read(*args, **kwargs)


@pytest.fixture
def stats_reads(monkeypatch):
    """The stats files read in full (not only their footers), by file name."""
    read = []
    read_table, parquet_file = Storage.read_table, Storage.parquet_file

    def spied_read_table(self, *parts, columns=None):
        if parts[-1] == layout.STATS:
            read.append(parts[-2])
        return read_table(self, *parts, columns=columns)

    def spied_parquet_file(self, *parts):
        file = parquet_file(self, *parts)
        return _Spied(file, parts[-2], read) if parts[-1] == layout.STATS else file

    monkeypatch.setattr(Storage, "read_table", spied_read_table)
    monkeypatch.setattr(Storage, "parquet_file", spied_parquet_file)
    return read


def footer(storage, parts):
    return storage.parquet_file(*parts).schema_arrow.metadata


def stats_parts(spec, partition):
    return layout.file_parts(spec, "fit", partition, layout.STATS)


def strict_checks(spec):
    """No cohesion drop and no noise increase allowed."""
    return spec.model_copy(update={"checks": spec.checks.model_copy(
        update={"new_files_max_cohesion_drop": 0.0, "new_files_max_noise_increase": 0.0})})


def assert_same(scalar: Readout, full: Readout):
    assert (scalar.documents, scalar.noise_documents, scalar.centred_documents) == (
        full.documents, full.noise_documents, full.centred_documents)
    assert scalar.cosine_sum == pytest.approx(full.cosine_sum, rel=1e-12)
    assert scalar.cohesion == pytest.approx(full.cohesion, rel=1e-12)


def test_new_files_readouts_from_the_footers_equal_the_full_stats(storage):
    spec = digits_spec()
    current = layout.read_current(storage, spec)
    assert current.partitions == FIT_FILES
    centroids = read_centroids(storage, spec, "fit")
    full = full_readout(storage, spec, NEW_FILES, centroids)
    assert full.documents == 1797 - 450 and full.noise_documents > 0 and 0 < full.cohesion < 1

    # the fit's own file was assigned before its centroids existed: no readout; every new file has one
    assert READOUT_META not in footer(storage, stats_parts(spec, FIT_FILES[0]))
    assert all(READOUT_META in footer(storage, stats_parts(spec, p)) for p in NEW_FILES)


def test_the_drift_check_reads_only_footers_and_reports_the_full_stats_numbers(storage, stats_reads):
    spec = digits_spec()
    current = layout.read_current(storage, spec)
    centroids = read_centroids(storage, spec, "fit")
    full = full_readout(storage, spec, NEW_FILES, centroids)
    stats_reads.clear()

    assert_same(changes.files_readout(storage, spec, "fit", NEW_FILES, centroids), full)
    files = set(FIT_FILES + NEW_FILES)
    # the digits' later files hold more documents hdbscan calls noise than the fit's file
    assert changes.new_files_drift(storage, spec, current, files) == (
        f"the {full.documents} documents assigned since the fit are {full.noise_share:.0%} noise "
        f"(the fit: {current.noise_share:.0%})")
    # against a perfectly cohesive fit, with no drop allowed, their cohesion is the one the full stats give
    perfect = dataclasses.replace(current, cohesion=1.0)
    assert f"(cohesion {full.cohesion:.3f} against the fit's 1.000)" in changes.new_files_drift(
        storage, strict_checks(spec), perfect, files)
    assert stats_reads == []


def test_a_stats_file_without_a_readout_is_read_in_full(storage, stats_reads):
    spec = digits_spec()
    centroids = read_centroids(storage, spec, "fit")
    old = stats_parts(spec, NEW_FILES[1])
    table = storage.read_table(*old)
    storage.write_table(table.replace_schema_metadata(
        {k: v for k, v in table.schema.metadata.items() if k != READOUT_META}), *old)
    full = full_readout(storage, spec, NEW_FILES, centroids)
    stats_reads.clear()

    assert_same(changes.files_readout(storage, spec, "fit", NEW_FILES, centroids), full)
    assert stats_reads == ["part-2.parquet"]


def test_readouts_taken_against_other_centroids_are_not_used(storage, stats_reads):
    spec = digits_spec()
    parts = layout.fit_parts(spec, "fit", layout.CLUSTERS)
    clusters = storage.read_table(*parts)
    before = read_centroids(storage, spec, "fit")
    recorded = changes.files_readout(storage, spec, "fit", NEW_FILES, before)
    # the fit's labels written again with other centroids (each cluster given the next one's)
    shifted = np.roll(np.arange(clusters.num_rows), 1)
    storage.write_table(clusters.set_column(clusters.schema.get_field_index("centroid"), "centroid",
                                            clusters.column("centroid").take(shifted)), *parts)
    after = read_centroids(storage, spec, "fit")
    assert after.digest != before.digest
    stats_reads.clear()

    readout = changes.files_readout(storage, spec, "fit", NEW_FILES, after)
    assert sorted(stats_reads) == [p.split("/")[1] for p in NEW_FILES]
    assert_same(readout, full_readout(storage, spec, NEW_FILES, after))
    assert readout.cosine_sum != pytest.approx(recorded.cosine_sum, rel=1e-3)


def test_the_fit_readout_of_an_old_pointer_comes_from_the_fit_files_stats(storage, stats_reads):
    spec = digits_spec()
    current = layout.read_current(storage, spec)
    fit = full_readout(storage, spec, FIT_FILES, read_centroids(storage, spec, "fit"))
    old_pointer = dataclasses.replace(current, cohesion=None, noise_share=None)  # written before it held them
    recorded = dataclasses.replace(current, cohesion=fit.cohesion, noise_share=fit.noise_share)
    strict = strict_checks(spec)
    stats_reads.clear()
    message = changes.new_files_drift(storage, strict, old_pointer, set(FIT_FILES + NEW_FILES))
    assert message == changes.new_files_drift(storage, strict, recorded, set(FIT_FILES + NEW_FILES))
    assert f"the fit's {fit.cohesion:.3f}" in message or f"the fit: {fit.noise_share:.0%}" in message
    assert stats_reads == ["part-0.parquet"]


def test_missing_and_unreadable_stats(storage):
    spec = digits_spec()
    centroids = read_centroids(storage, spec, "fit")
    whole = changes.files_readout(storage, spec, "fit", NEW_FILES, centroids)
    gone = changes.file_readout(storage, spec, "fit", NEW_FILES[0], centroids)
    storage.fs.delete_file(storage.path(*stats_parts(spec, NEW_FILES[0])))  # assigned, its stats not written yet
    assert changes.file_readout(storage, spec, "fit", NEW_FILES[0], centroids) == Readout()
    assert changes.files_readout(storage, spec, "fit", NEW_FILES, centroids).documents == \
        whole.documents - gone.documents
    storage.write_bytes(b"not parquet", *stats_parts(spec, NEW_FILES[2]))
    with pytest.raises(ValueError, match=r"part-3\.parquet/stats\.parquet cannot be read"):
        changes.files_readout(storage, spec, "fit", NEW_FILES, centroids)

