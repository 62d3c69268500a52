"""``cluster_map``: the run's map, drawn from the latest coordinates and labels.

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
from cluster_assets.stages.result import StageResult, timed
from cluster_assets.stages.sample import ID

AXES = ("x", "y", "z")


def latest_members(storage, spec: ClusterDefinition) -> tuple[pa.Table, tuple[str, ...]]:
    """document_id, cluster_id and coordinates from the stages' latest outputs (written in the same order)."""
    coords = storage.read_table(*layout.asset_parts(spec, layout.COORDS))
    assigned = storage.read_table(*layout.asset_parts(spec, layout.ASSIGNMENTS), columns=[ID, "cluster_id"])
    if coords.num_rows != assigned.num_rows or not coords.column(ID).equals(assigned.column(ID)):
        raise ValueError(f"coordinates and assignments of {spec.cluster_name!r} are out of step: "
                         f"materialize {spec.cluster_name}/reduced_coords again")
    axes = tuple(a for a in AXES if a in coords.column_names)
    members = pa.table({ID: coords.column(ID), "cluster_id": assigned.column("cluster_id")}
                       | {a: coords.column(a) for a in axes})
    return members, axes


def run_cluster_map(storage, spec: ClusterDefinition, run_id: str) -> StageResult:
    result = StageResult()
    with timed(result, "duration_s"):
        members, axes = latest_members(storage, spec)
        members_parts = layout.artifact_parts(spec, run_id, layout.MEMBERS_ARTIFACT)
        if not storage.exists(*members_parts):  # the map was redrawn without reduced_coords in this run
            storage.write_table(members, *members_parts)
        draw_maps(storage, spec, run_id, members, axes, result)
    result.row_count = members.num_rows
    result.uri = result.paths.get("map_png")
    return result


def draw_maps(storage, spec: ClusterDefinition, run_id: str, members: pa.Table, axes: tuple[str, ...],
              result: StageResult) -> None:
    """The run's map: a PNG artifact, a small copy inline in the metadata, and the interactive HTML."""
    clusters, note = map_html.current_clusters(storage, spec)
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
    result.paths["map_html"] = map_html.write_run_map(storage, spec, run_id, clusters=clusters,
                                                      notes=[note] if note else [])
    if note:
        result.warnings.append(f"map: {note}")
