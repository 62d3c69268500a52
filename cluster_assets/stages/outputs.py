"""Reading a fit's outputs back whole (the CLI, the checks, tests): per-file outputs are concatenated in file order."""

from __future__ import annotations

import json

import pyarrow as pa

from cluster_assets.stages import layout

PER_FILE = (layout.ASSIGNMENTS, layout.COORDS, layout.STATS)
PER_SAMPLE = (layout.SAMPLE, layout.EMBEDDINGS)


def fit_files(storage, cluster_name: str, fit_id: str, name: str = layout.ASSIGNMENTS) -> list[str]:
    """``<collection_id>/<file name>`` of every file with output ``name`` in the fit, sorted."""
    base = ("assets", cluster_name, "fits", fit_id, "files")
    out = []
    for cid in storage.list_dir(*base):
        for file_name in storage.list_dir(*base, cid):
            if storage.exists(*base, cid, file_name, name):
                out.append(layout.partition_key(cid, file_name))
    return out


def current_fit_id(storage, cluster_name: str) -> str:
    parts = ("assets", cluster_name, layout.CURRENT)
    if not storage.exists(*parts):
        raise FileNotFoundError(f"{cluster_name!r} has no complete fit yet: run `cluster-assets run {cluster_name}`")
    return json.loads(storage.read_bytes(*parts))["fit_id"]


def read_output(storage, cluster_name: str, name: str, fit_id: str | None = None) -> pa.Table:
    """A fit's output ``name`` (default: the current fit's), whole."""
    fit_id = fit_id or current_fit_id(storage, cluster_name)
    base = ("assets", cluster_name, "fits", fit_id)
    if name in PER_FILE:
        tables = [storage.read_table(*base, "files", *p.split("/", 1), name).replace_schema_metadata(None)
                  for p in fit_files(storage, cluster_name, fit_id, name)]
        return pa.concat_tables(tables)
    if name in PER_SAMPLE:
        sample_id = json.loads(storage.read_bytes(*base, layout.FIT))["sample_id"]
        return storage.read_table("assets", cluster_name, "samples", sample_id, name)
    return storage.read_table(*base, name)
