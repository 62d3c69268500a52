"""An interactive map as one self-contained HTML file: no server, no network.

Pan (drag), zoom (wheel), hover a point for its document id, a text snippet and
its cluster's label, and search labels and keywords (matching clusters stay
bright, the others fade). 3-D coordinates give a 3-D view: drag rotates,
shift-drag pans. Everything (data, script, style) is inlined; coordinates and
cluster ids travel as base64 typed arrays, so 50k points weigh a few MB.

``render_html`` is pure (arrays in, a string out); ``run_map_data`` gathers a
run's members, labels and document snippets from the storage layer.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from cluster_assets.cluster_map import cluster_colours

MAX_POINTS = 50_000
SNIPPET_CHARS = 160


@dataclass
class ClusterInfo:
    cluster_id: int
    label: str
    count: int
    keywords: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)  # labels from the top of the hierarchy down


@dataclass
class MapData:
    ids: list[str]
    coords: np.ndarray  # (n, 2) or (n, 3)
    cluster_ids: np.ndarray  # (n,), -1 = noise
    snippets: list[str]
    clusters: list[ClusterInfo]
    title: str = "cluster map"
    total_points: int | None = None  # before sampling
    notes: list[str] = field(default_factory=list)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def _script_json(value) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace(
        "&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_html(data: MapData) -> str:
    coords = np.asarray(data.coords, dtype=np.float32)
    dims = coords.shape[1]
    if dims not in (2, 3):
        raise ValueError(f"coordinates have {dims} dimensions; a map needs 2 or 3")
    labels = np.asarray(data.cluster_ids, dtype=np.int32)
    colours = cluster_colours([c.cluster_id for c in data.clusters] + labels.tolist())
    centres = {}
    for c in data.clusters:
        members = coords[labels == c.cluster_id]
        if len(members):
            centres[c.cluster_id] = np.median(members, axis=0).round(5).tolist()
    clusters = [
        {"id": c.cluster_id, "label": c.label, "count": c.count, "keywords": c.keywords[:10], "path": c.path,
         "color": "#%02x%02x%02x" % colours.get(c.cluster_id, (120, 120, 120)), "centre": centres.get(c.cluster_id)}
        for c in data.clusters
    ]
    notes = list(data.notes)
    if data.total_points and data.total_points > len(labels):
        notes.append(f"showing a random {len(labels):,} of {data.total_points:,} documents")
    payload = {
        "title": data.title,
        "dims": dims,
        "n": int(len(labels)),
        "coords": _b64(coords.reshape(-1)),
        "clusters_of": _b64(labels),
        "ids": [str(i) for i in data.ids],
        "snippets": [s or "" for s in data.snippets],
        "clusters": clusters,
        "noise_color": "#%02x%02x%02x" % colours[-1],
        "notes": notes,
    }
    return TEMPLATE.replace("__TITLE__", html.escape(data.title)).replace("__DATA__", _script_json(payload))


def map_data(shown: pa.Table, clusters: list[ClusterInfo], texts: list[dict], title: str, total_points: int,
             snippet_chars: int = SNIPPET_CHARS) -> MapData:
    """A map's data from the members drawn (``shown``: document_id, cluster_id, x, y[, z], at most
    ``MAX_POINTS`` of the run's ``total_points``, see ``sample_rows``), its clusters and each drawn member's
    payload (``texts``, row by row)."""
    total = total_points
    axes = [a for a in ("x", "y", "z") if a in shown.column_names]
    coords = np.column_stack([shown.column(a).to_numpy(zero_copy_only=False) for a in axes]).astype(np.float32)
    labels = shown.column("cluster_id").to_numpy(zero_copy_only=False).astype(np.int32)
    ids = shown.column("document_id").to_pylist()
    snippets = []
    for row in texts:
        text = " ".join(t for t in (text_of(v) for k, v in row.items() if k != "document_id") if t)
        snippets.append(" ".join(text.split())[:snippet_chars])
    return MapData(ids, coords, labels, snippets, clusters, title=title, total_points=total)


def numbered_clusters(labels: np.ndarray) -> list[ClusterInfo]:
    found, counts = np.unique(labels[labels >= 0], return_counts=True)
    return [ClusterInfo(int(c), f"Cluster {c}", int(n)) for c, n in zip(found, counts)]


def sample_rows(n: int, limit: int, seed: int = 0) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def text_of(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(t for t in (text_of(v) for v in value.values()) if t)
    if isinstance(value, list):
        return " ".join(t for t in (text_of(v) for v in value[:5]) if t)
    return ""


def clusters_of(table: pa.Table, counts: dict[int, int] | None = None) -> list[ClusterInfo]:
    wanted = [c for c in ("cluster_id", "count", "label", "keywords", "cluster_path") if c in table.column_names]
    out = []
    for row in table.select(wanted).to_pylist():
        c = int(row["cluster_id"])
        out.append(ClusterInfo(c, row.get("label") or f"Cluster {c}",
                               int((counts or {}).get(c, row.get("count") or 0)),
                               list(row.get("keywords") or []), list(row.get("cluster_path") or [])))
    return out


TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  html, body { margin: 0; height: 100%; font: 14px system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; }
  #bar { position: fixed; top: 0; left: 0; right: 0; height: 44px; display: flex; align-items: center; gap: 12px;
         padding: 0 12px; background: #fafafa; border-bottom: 1px solid #ddd; z-index: 2; }
  #bar h1 { font-size: 15px; margin: 0; white-space: nowrap; }
  #search { width: 260px; padding: 5px 8px; border: 1px solid #bbb; border-radius: 4px; font: inherit; }
  #status, #notes { color: #666; font-size: 12px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  #matches { position: fixed; top: 50px; right: 10px; max-height: 45%; overflow: auto; background: #fff;
             border: 1px solid #ddd; border-radius: 4px; font-size: 12px; z-index: 2; display: none; }
  #matches div { padding: 3px 8px; cursor: pointer; } #matches div:hover { background: #eef; }
  canvas { position: fixed; top: 44px; left: 0; cursor: grab; }
  #tooltip { position: fixed; pointer-events: none; background: rgba(255,255,255,.97); border: 1px solid #999;
             border-radius: 4px; padding: 6px 8px; max-width: 360px; font-size: 12px; display: none; z-index: 3;
             box-shadow: 0 2px 6px rgba(0,0,0,.15); }
  #tooltip .id { font-weight: 600; } #tooltip .label { margin-top: 2px; } #tooltip .snippet { color: #444; margin-top: 4px; }
</style></head>
<body>
<div id="bar"><h1 id="title"></h1>
  <input id="search" type="search" placeholder="Search labels and keywords" autocomplete="off">
  <span id="status"></span><span id="notes"></span></div>
<div id="matches"></div>
<canvas id="map"></canvas>
<div id="tooltip"></div>
<script id="map-data" type="application/json">__DATA__</script>
<script>
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("map-data").textContent);
  function decode(b64, Type) {
    const bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Type(bytes.buffer);
  }
  const dims = D.dims, n = D.n;
  const P = decode(D.coords, Float32Array), C = decode(D.clusters_of, Int32Array);
  const byId = new Map(D.clusters.map(c => [c.id, c]));
  document.getElementById("title").textContent = D.title;
  document.getElementById("notes").textContent = D.notes.join(" · ") + (dims === 3 ? (D.notes.length ? " · " : "") + "3-D: drag rotates, shift-drag pans, wheel zooms" : "");
  const canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
  const tooltip = document.getElementById("tooltip"), status = document.getElementById("status");
  const search = document.getElementById("search"), matchesBox = document.getElementById("matches");
  // data bounds and centre
  const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
  for (let i = 0; i < n; i++) for (let d = 0; d < dims; d++) { const v = P[i * dims + d]; if (v < lo[d]) lo[d] = v; if (v > hi[d]) hi[d] = v; }
  const mid = [0, 1, 2].map(d => dims > d && n ? (lo[d] + hi[d]) / 2 : 0);
  const span = Math.max(1e-9, ...[0, 1, 2].filter(d => d < dims && n).map(d => hi[d] - lo[d]));
  const view = { scale: 1, tx: 0, ty: 0, yaw: 0.6, pitch: 0.35 };
  let W = 0, H = 0, sx = new Float32Array(n), sy = new Float32Array(n), grid = new Map(), CELL = 8;
  let matching = null, labelsDrawn = [], pointsDrawn = 0;
  const colorOf = id => id < 0 ? D.noise_color : (byId.get(id) || { color: "#888" }).color;
  function project(x, y, z, out) {
    let px = x - mid[0], py = y - mid[1], pz = dims === 3 ? z - mid[2] : 0;
    if (dims === 3) {
      const cy = Math.cos(view.yaw), syw = Math.sin(view.yaw), cp = Math.cos(view.pitch), sp = Math.sin(view.pitch);
      const x1 = cy * px + syw * pz, z1 = -syw * px + cy * pz;
      const y1 = cp * py - sp * z1;
      px = x1; py = y1;
    }
    const k = 0.9 * Math.min(W, H) / span * view.scale;
    out[0] = W / 2 + view.tx + px * k; out[1] = H / 2 + view.ty - py * k;
  }
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    W = window.innerWidth; H = window.innerHeight - 44;
    canvas.width = W * dpr; canvas.height = H * dpr; canvas.style.width = W + "px"; canvas.style.height = H + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0); draw();
  }
  function draw() {
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    const out = [0, 0], size = n > 20000 ? 2 : n > 2000 ? 3 : 5;
    grid = new Map(); pointsDrawn = 0;
    const groups = new Map();  // colour -> indices, so the canvas state changes once per colour
    for (let i = 0; i < n; i++) {
      project(P[i * dims], P[i * dims + 1], dims === 3 ? P[i * dims + 2] : 0, out);
      sx[i] = out[0]; sy[i] = out[1];
      if (out[0] < -5 || out[1] < -5 || out[0] > W + 5 || out[1] > H + 5) continue;
      const key = (Math.floor(out[0] / CELL)) + "," + (Math.floor(out[1] / CELL));
      let cell = grid.get(key); if (!cell) grid.set(key, cell = []); cell.push(i);
      const c = C[i], dim = matching && !matching.has(c);
      const g = (dim ? "d" : "") + colorOf(c);
      let list = groups.get(g); if (!list) groups.set(g, list = []); list.push(i);
    }
    const keys = [...groups.keys()].sort((a, b) => (b[0] === "d") - (a[0] === "d"));  // faded first
    for (const g of keys) {
      const faded = g[0] === "d";
      ctx.globalAlpha = faded ? 0.12 : 0.8; ctx.fillStyle = faded ? g.slice(1) : g;
      for (const i of groups.get(g)) { ctx.fillRect(sx[i] - size / 2, sy[i] - size / 2, size, size); pointsDrawn++; }
    }
    ctx.globalAlpha = 1;
    drawLabels();
    status.textContent = `${n.toLocaleString()} points · ${D.clusters.length} clusters` +
      (matching ? ` · ${matching.size} match` : "");
  }
  function drawLabels() {
    labelsDrawn = []; const taken = [], out = [0, 0];
    const order = D.clusters.filter(c => c.centre).slice().sort((a, b) =>
      ((matching && matching.has(b.id)) - (matching && matching.has(a.id))) || b.count - a.count);
    for (const c of order) {
      const hit = matching && matching.has(c.id);
      if (matching && !hit && matching.size) continue;
      project(c.centre[0], c.centre[1], dims === 3 ? c.centre[2] : 0, out);
      ctx.font = (hit ? "bold 14px " : "12px ") + "system-ui, sans-serif";
      const text = c.label.length > 40 ? c.label.slice(0, 39) + "…" : c.label;
      const w = ctx.measureText(text).width, h = 14;
      const box = [out[0] - w / 2 - 3, out[1] - h / 2 - 2, out[0] + w / 2 + 3, out[1] + h / 2 + 2];
      if (box[2] < 0 || box[0] > W || box[3] < 0 || box[1] > H) continue;
      if (taken.some(t => !(box[2] < t[0] || box[0] > t[2] || box[3] < t[1] || box[1] > t[3]))) continue;
      taken.push(box);
      if (hit) { ctx.fillStyle = "#fff3a0"; ctx.fillRect(box[0], box[1], box[2] - box[0], box[3] - box[1]); }
      ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.lineWidth = 3; ctx.strokeStyle = "#fff";
      ctx.strokeText(text, out[0], out[1]); ctx.fillStyle = "#111"; ctx.fillText(text, out[0], out[1]);
      labelsDrawn.push({ id: c.id, label: c.label, x: out[0], y: out[1] });
    }
  }
  function nearest(x, y, radius) {
    let best = -1, bestD = radius * radius;
    const cx = Math.floor(x / CELL), cy = Math.floor(y / CELL), r = Math.ceil(radius / CELL);
    for (let gx = cx - r; gx <= cx + r; gx++) for (let gy = cy - r; gy <= cy + r; gy++) {
      const cell = grid.get(gx + "," + gy); if (!cell) continue;
      for (const i of cell) { const dx = sx[i] - x, dy = sy[i] - y, d = dx * dx + dy * dy; if (d <= bestD) { bestD = d; best = i; } }
    }
    return best;
  }
  function escapeHtml(s) { return String(s).replace(/[&<>"']/g, ch => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]); }
  function showTooltip(i, clientX, clientY) {
    if (i < 0) { tooltip.style.display = "none"; return; }
    const c = byId.get(C[i]);
    const label = C[i] < 0 ? "noise (no cluster)" : (c ? c.label : "Cluster " + C[i]);
    const path = c && c.path && c.path.length > 1 ? c.path.join(" › ") : "";
    tooltip.innerHTML = `<div class="id">${escapeHtml(D.ids[i])}</div><div class="label" style="color:${colorOf(C[i])}">● ${escapeHtml(label)}</div>` +
      (path ? `<div class="label">${escapeHtml(path)}</div>` : "") + (D.snippets[i] ? `<div class="snippet">${escapeHtml(D.snippets[i])}</div>` : "");
    tooltip.style.display = "block";
    tooltip.style.left = Math.min(clientX + 14, window.innerWidth - 370) + "px";
    tooltip.style.top = Math.min(clientY + 14, window.innerHeight - 120) + "px";
  }
  let drag = null;
  canvas.addEventListener("mousedown", e => { drag = { x: e.clientX, y: e.clientY, shift: e.shiftKey }; canvas.style.cursor = "grabbing"; });
  window.addEventListener("mouseup", () => { drag = null; canvas.style.cursor = "grab"; });
  canvas.addEventListener("mousemove", e => {
    const rect = canvas.getBoundingClientRect(), x = e.clientX - rect.left, y = e.clientY - rect.top;
    if (drag) {
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y; drag.x = e.clientX; drag.y = e.clientY;
      if (dims === 3 && !drag.shift) { view.yaw += dx * 0.01; view.pitch = Math.max(-1.5, Math.min(1.5, view.pitch + dy * 0.01)); }
      else { view.tx += dx; view.ty += dy; }
      tooltip.style.display = "none"; draw(); return;
    }
    showTooltip(nearest(x, y, 8), e.clientX, e.clientY);
  });
  canvas.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });
  canvas.addEventListener("wheel", e => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect(), x = e.clientX - rect.left - W / 2, y = e.clientY - rect.top - H / 2;
    const f = Math.exp(-e.deltaY * 0.0015), s = Math.max(0.2, Math.min(400, view.scale * f)), g = s / view.scale;
    view.tx = x - (x - view.tx) * g; view.ty = y - (y - view.ty) * g; view.scale = s; draw();
  }, { passive: false });
  function applySearch(q) {
    q = q.trim().toLowerCase();
    if (!q) { matching = null; matchesBox.style.display = "none"; draw(); return; }
    const hits = D.clusters.filter(c => c.label.toLowerCase().includes(q) ||
      c.keywords.some(k => k.toLowerCase().includes(q)) || (c.path || []).some(p => p.toLowerCase().includes(q)));
    matching = new Set(hits.map(c => c.id));
    matchesBox.innerHTML = hits.length ? hits.sort((a, b) => b.count - a.count).map(c =>
      `<div data-id="${c.id}"><span style="color:${c.color}">●</span> ${escapeHtml(c.label)} (${c.count})</div>`).join("")
      : "<div>no cluster matches</div>";
    matchesBox.style.display = "block"; draw();
  }
  search.addEventListener("input", () => applySearch(search.value));
  matchesBox.addEventListener("click", e => {  // centre the view on a matching cluster
    const row = e.target.closest("[data-id]"); if (!row) return;
    const c = byId.get(Number(row.dataset.id)); if (!c || !c.centre) return;
    const out = [0, 0]; project(c.centre[0], c.centre[1], dims === 3 ? c.centre[2] : 0, out);
    view.tx += W / 2 - out[0]; view.ty += H / 2 - out[1]; view.scale = Math.min(400, view.scale * 2); draw();
  });
  window.addEventListener("resize", resize);
  // for people who script the page (and for tests): what is on screen
  window.clusterMap = {
    stats: () => ({ points: n, pointsDrawn, clusters: D.clusters.length, dims, labelsDrawn: labelsDrawn.slice(),
                    matching: matching ? [...matching] : null }),
    screenOf: i => ({ x: sx[i], y: sy[i] + 44 }),
    search: q => { search.value = q; applySearch(q); },
  };
  resize();
})();
</script>
</body></html>
"""
