"""``cluster_map``: the fit's map, drawn from every file's coordinates and the fit's labels.

A PNG artifact (with a small copy inline in the materialization's Markdown
metadata, so the UI shows it) and the interactive ``map.html``, both beside the
run's Parquet artifacts.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cluster_assets import cluster_map, map_html
from cluster_assets.spec import ClusterDefinition
from cluster_assets.stages import layout
from cluster_assets.stages.context import LineageError, StageContext
from cluster_assets.features import parse_address
from cluster_assets.stages.label import assigned_partitions, payload_rows_by_key, text_columns
from cluster_assets.stages.reduce import AXES, COLLECTION, fit_members
from cluster_assets.stages.sample import ID
from cluster_assets.stages.result import StageResult, timed


def run_cluster_map(ctx: StageContext) -> StageResult:
    storage, spec, run_id = ctx.storage, ctx.spec, ctx.run_id
    fit_id = ctx.need_fit()
    partitions = assigned_partitions(storage, spec, fit_id, ctx.all_partitions or ctx.partitions, layout.COORDS)
    if not partitions:
        raise LineageError(f"no file has coordinates in fit {fit_id} of {spec.cluster_name!r}: materialize "
                           f"{spec.cluster_name}/reduced_coords first")
    result = StageResult()
    with timed(result, "duration_s"):
        members = pa.concat_tables(list(fit_members(storage, spec, fit_id, partitions)))
        axes = tuple(a for a in AXES if a in members.column_names)
        members_parts = layout.artifact_parts(spec, run_id, layout.MEMBERS_ARTIFACT)
        if not storage.exists(*members_parts):  # the map was redrawn without reduced_coords in this run
            storage.write_table(members, *members_parts)
        draw_maps(storage, spec, run_id, fit_id, members, axes, result)
    result.row_count = members.num_rows
    result.uri = result.paths.get("map_png")
    result.metadata[layout.FIT_ID_KEY] = fit_id
    return result


def draw_maps(storage, spec: ClusterDefinition, run_id: str, fit_id: str, members: pa.Table, axes: tuple[str, ...],
              result: StageResult) -> None:
    """The run's map: a PNG artifact, a small copy inline in the metadata, and the interactive HTML."""
    clusters, note = current_clusters(storage, spec, fit_id)
    names = {c.cluster_id: c.label for c in clusters}
    coords = np.column_stack([members.column(a).to_numpy(zero_copy_only=False) for a in axes[:2]])
    labels = members.column("cluster_id").to_numpy(zero_copy_only=False)
    title = f"{spec.cluster_name}: {len(labels):,} documents, {len(clusters)} clusters" + \
        (" (x, y of 3-D coordinates)" if len(axes) == 3 else "")
    picture = cluster_map.render_map(coords, labels, names, title=title)
    result.paths["map_png"] = storage.write_bytes(picture.png, *layout.artifact_parts(spec, run_id,
                                                                                      layout.MAP_PNG_ARTIFACT))
    markdown, size = cluster_map.inline_markdown(coords, labels, names, title=title)
    result.markdown["map"] = markdown + (f"\n\n_{note}_" if note else "")
    result.metadata["map_labels_drawn"] = picture.labels_drawn
    result.paths["map_html"] = write_run_map(storage, spec, run_id, clusters=clusters, notes=[note] if note else [],
                                             members=members)
    if note:
        result.warnings.append(f"map: {note}")


def current_clusters(storage, spec: ClusterDefinition, fit_id: str) -> tuple[list[map_html.ClusterInfo], str | None]:
    """The clusters of a fit with their labels; numbered, with a note saying so, while it has none."""
    clusters = storage.read_table(*layout.fit_parts(spec, fit_id, layout.CLUSTERS), columns=["cluster_id", "count"])
    counts = dict(zip(clusters.column("cluster_id").to_pylist(), clusters.column("count").to_pylist()))
    labels_parts = layout.fit_parts(spec, fit_id, layout.LABELS)
    if not storage.exists(*labels_parts):
        return [map_html.ClusterInfo(c, f"Cluster {c}", n) for c, n in counts.items()], \
            "no labels yet: clusters are shown by number"
    return map_html.clusters_of(storage.read_table(*labels_parts), counts), None


def run_map_data(storage, spec: ClusterDefinition, run_id: str, max_points: int = map_html.MAX_POINTS,
                 clusters: list[map_html.ClusterInfo] | None = None, members: pa.Table | None = None) -> map_html.MapData:
    """One run's map: ``members`` (by default its members artifact), the labels of its centroids artifact
    (or ``clusters``), and document snippets."""
    if members is None:
        members = storage.read_table(*layout.artifact_parts(spec, run_id, layout.MEMBERS_ARTIFACT))
    shown = members.take(pa.array(map_html.sample_rows(members.num_rows, max_points)))
    notes: list[str] = []
    centroid_parts = layout.artifact_parts(spec, run_id, layout.CENTROIDS_ARTIFACT)
    if clusters is None and storage.exists(*centroid_parts):
        clusters = map_html.clusters_of(storage.read_table(*centroid_parts))
    elif clusters is None:
        notes.append("this run has no labels yet: clusters are shown by number")
        clusters = map_html.numbered_clusters(members.column("cluster_id").to_numpy(zero_copy_only=False))
    texts = point_payloads(storage, spec, shown)
    data = map_html.map_data(shown, clusters, texts, f"{spec.cluster_name} · run {run_id[:8]}", members.num_rows)
    data.notes.extend(notes)
    return data


def point_payloads(storage, spec: ClusterDefinition, members: pa.Table) -> list[dict]:
    """Each member's text fields, looked up in its own collection (two sources may share a ``document_id``);
    a members artifact written before members named their collection searches every source."""
    features = {parse_address(a) for a in spec.feature_addresses}
    ids = [str(i) for i in members.column(ID).to_pylist()]
    if COLLECTION in members.column_names:
        keys = list(zip((str(c) for c in members.column(COLLECTION).to_pylist()), ids))
    else:
        keys = [(cid, i) for cid in spec.source_collection_ids for i in ids]
    found = payload_rows_by_key(storage, spec, keys, lambda s: text_columns(s, spec, features))
    if COLLECTION in members.column_names:
        return [found.get(k, {}) for k in keys]
    return [next((found[(c, i)] for c in spec.source_collection_ids if (c, i) in found), {}) for i in ids]


def write_run_map(storage, spec: ClusterDefinition, run_id: str, max_points: int = map_html.MAX_POINTS,
                  clusters: list[map_html.ClusterInfo] | None = None, notes=(), members: pa.Table | None = None) -> str:
    """Write ``artifacts/<cluster>/<run_id>/map.html`` (of ``members``, by default the run's members artifact)
    and return its URI."""
    data = run_map_data(storage, spec, run_id, max_points, clusters=clusters, members=members)
    data.notes.extend(notes)
    return storage.write_bytes(map_html.render_html(data).encode("utf-8"),
                               *layout.artifact_parts(spec, run_id, layout.MAP_HTML_ARTIFACT))
