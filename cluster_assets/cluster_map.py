"""A picture of the map: points coloured by cluster, noise grey, labels at the cluster centres.

Drawn by rasterising, not by drawing points one by one: every point adds its
cluster's colour to its pixel (and, when there are few points, to a small disc
around it), the pixel shows the mean colour of its points with an opacity that
grows with the log of their count. A million points cost a few ``bincount``
calls; the labels are drawn with Pillow, largest clusters first, skipping any
that would overlap one already drawn, so a few hundred clusters stay readable.

Pure numpy + Pillow: no Dagster import.
"""

from __future__ import annotations

import base64
import colorsys
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NOISE_RGB = (170, 170, 170)
BACKGROUND = (255, 255, 255)
# 20 distinct colours (Tableau 20 and Glasbey-like), then golden-angle hues for the rest
BASE_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (23, 190, 207), (188, 189, 34), (0, 84, 147),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (158, 218, 229), (219, 219, 141), (102, 102, 102),
)


def palette(n: int) -> np.ndarray:
    """``n`` RGB colours (uint8), the first 20 hand-picked, the rest spread by the golden angle."""
    colours = list(BASE_PALETTE[:n])
    for i in range(len(colours), n):
        hue = (i * 0.618033988749895) % 1.0
        light = 0.42 + 0.12 * ((i // 7) % 3) / 2
        colours.append(tuple(int(255 * v) for v in colorsys.hls_to_rgb(hue, light, 0.75)))
    return np.array(colours, dtype=np.uint8).reshape(n, 3)


def cluster_colours(cluster_ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    """A stable colour per cluster id (the map PNG and the HTML map use the same)."""
    ids = sorted(int(c) for c in set(cluster_ids) if c >= 0)
    pal = palette(len(ids))
    out = {c: tuple(int(v) for v in pal[i]) for i, c in enumerate(ids)}
    out[-1] = NOISE_RGB
    return out


@dataclass
class MapPicture:
    png: bytes
    width: int
    height: int
    labels_drawn: int
    labels_total: int
    points: int

    def markdown(self, alt: str = "cluster map") -> str:
        return f"![{alt}](data:image/png;base64,{base64.b64encode(self.png).decode()})"


def bounds(xy: np.ndarray, margin: float = 0.04) -> tuple[float, float, float, float]:
    """A view that holds almost every point: 0.2 to 99.8 percentiles, plus a margin."""
    if not len(xy):
        return 0.0, 1.0, 0.0, 1.0
    lo = np.percentile(xy, 0.2, axis=0) if len(xy) > 1000 else xy.min(axis=0)
    hi = np.percentile(xy, 99.8, axis=0) if len(xy) > 1000 else xy.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - margin * span, hi + margin * span
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _radius(n: int, area: int) -> int:
    """Points per pixel decide how big a point is drawn: discs when sparse, single pixels when dense."""
    density = n / max(area, 1)
    if density < 0.002:
        return 3
    if density < 0.01:
        return 2
    if density < 0.05:
        return 1
    return 0


def rasterise(xy: np.ndarray, labels: np.ndarray, colours: Mapping[int, tuple[int, int, int]],
              width: int, height: int, view: tuple[float, float, float, float],
              radius: int | None = None) -> np.ndarray:
    """An (height, width, 3) uint8 image of the points over a white background."""
    x0, x1, y0, y1 = view
    n = len(xy)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    if n == 0:
        return image
    px = np.floor((xy[:, 0] - x0) / (x1 - x0) * (width - 1) + 0.5).astype(np.int64)
    py = np.floor((y1 - xy[:, 1]) / (y1 - y0) * (height - 1) + 0.5).astype(np.int64)  # y up
    ids = np.asarray(labels, dtype=np.int64)
    known = sorted(colours)
    lut_ids = np.array(known, dtype=np.int64)
    lut = np.array([colours[c] for c in known], dtype=np.float64)
    idx = np.searchsorted(lut_ids, ids)
    idx = np.clip(idx, 0, len(lut_ids) - 1)
    missing = lut_ids[idx] != ids
    rgb = lut[idx]
    rgb[missing] = NOISE_RGB
    # noise counts for less, so that clusters read through it
    weight = np.where(ids < 0, 0.35, 1.0)
    r = _radius(n, width * height) if radius is None else radius
    offsets = [(dx, dy) for dx in range(-r, r + 1) for dy in range(-r, r + 1) if dx * dx + dy * dy <= r * r + r]
    size = width * height
    acc = np.zeros((4, size))
    for dx, dy in offsets:
        qx, qy = px + dx, py + dy
        inside = (qx >= 0) & (qx < width) & (qy >= 0) & (qy < height)
        flat = (qy * width + qx)[inside]
        w = weight[inside]
        acc[0] += np.bincount(flat, weights=w, minlength=size)
        for ch in range(3):
            acc[ch + 1] += np.bincount(flat, weights=w * rgb[inside, ch], minlength=size)
    count = acc[0]
    hit = count > 0
    mean = np.zeros((size, 3))
    mean[hit] = (acc[1:, hit] / count[hit]).T
    # opacity: one point is clearly visible, dense areas saturate
    top = np.percentile(count[hit], 99) if hit.any() else 1.0
    alpha = np.zeros(size)
    alpha[hit] = 0.7 + 0.3 * np.clip(np.log1p(count[hit]) / np.log1p(max(top, 1.0)), 0, 1)
    out = (1 - alpha[:, None]) * np.array(BACKGROUND) + alpha[:, None] * mean
    return out.reshape(height, width, 3).round().astype(np.uint8)


def label_positions(xy: np.ndarray, labels: np.ndarray, cluster_ids: Sequence[int]) -> dict[int, tuple[float, float]]:
    """Each cluster's centre on the map: the median of its members (robust to stray points)."""
    out = {}
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    for c in cluster_ids:
        lo, hi = np.searchsorted(sorted_labels, c), np.searchsorted(sorted_labels, c, side="right")
        if hi > lo:
            members = xy[order[lo:hi]]
            out[int(c)] = (float(np.median(members[:, 0])), float(np.median(members[:, 1])))
    return out


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _shorten(text: str, limit: int = 32) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_map(xy: np.ndarray, labels: np.ndarray, names: Mapping[int, str] | None = None, *,
               width: int = 1200, height: int = 900, title: str | None = None, draw_labels: bool = True,
               max_labels: int = 300, radius: int | None = None) -> MapPicture:
    """The map as a PNG. ``xy`` is (n, 2) or (n, 3) (then x, y are drawn); ``labels`` the cluster ids."""
    from PIL import Image, ImageDraw

    xy = np.asarray(xy, dtype=np.float64)[:, :2]
    labels = np.asarray(labels, dtype=np.int64)
    names = dict(names or {})
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    colours = cluster_colours(ids.tolist())
    header = 34 if title else 0
    view = bounds(xy)
    pixels = rasterise(xy, labels, colours, width, height - header, view, radius)
    image = Image.new("RGB", (width, height), BACKGROUND)
    image.paste(Image.fromarray(pixels), (0, header))
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((12, 8), title, fill=(40, 40, 40), font=_font(18))
    drawn = 0
    if draw_labels and len(ids):
        centres = label_positions(xy, labels, ids.tolist())
        taken: list[tuple[float, float, float, float]] = []
        font_big, font_small = _font(15), _font(12)
        x0, x1, y0, y1 = view
        plot_h = height - header
        for rank, i in enumerate(np.argsort(-counts, kind="stable")[:max_labels]):
            c = int(ids[i])
            if c not in centres:
                continue
            cx = (centres[c][0] - x0) / (x1 - x0) * (width - 1)
            cy = header + (y1 - centres[c][1]) / (y1 - y0) * (plot_h - 1)
            text = _shorten(names.get(c) or f"Cluster {c}")
            font = font_big if rank < 20 else font_small
            left, top, right, bottom = draw.textbbox((cx, cy), text, font=font, anchor="mm", stroke_width=2)
            # keep a label near the edge inside the picture
            shift_x = max(0, 2 - left) - max(0, right - (width - 2))
            shift_y = max(0, header + 2 - top) - max(0, bottom - (height - 2))
            cx, cy = cx + shift_x, cy + shift_y
            left, right, top, bottom = left + shift_x, right + shift_x, top + shift_y, bottom + shift_y
            box = (left - 2, top - 1, right + 2, bottom + 1)
            if right <= left or any(not (box[2] < t[0] or box[0] > t[2] or box[3] < t[1] or box[1] > t[3])
                                    for t in taken):
                continue
            taken.append(box)
            colour = tuple(int(v * 0.55) for v in colours[c])  # a darker shade of the cluster's colour
            draw.text((cx, cy), text, fill=colour, font=font, anchor="mm", stroke_width=2,
                      stroke_fill=(255, 255, 255))
            drawn += 1
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return MapPicture(buffer.getvalue(), width, height, drawn, int(len(ids)), int(len(xy)))


def inline_markdown(xy: np.ndarray, labels: np.ndarray, names: Mapping[int, str] | None = None,
                    title: str | None = None, width: int = 720, height: int = 540) -> tuple[str, int]:
    """A small render for Dagster's Markdown metadata (drawn at its own size so labels stay sharp,
    then reduced to 128 colours): the Markdown and its PNG size in bytes."""
    from PIL import Image

    picture = render_map(xy, labels, names, width=width, height=height, title=title, max_labels=80)
    image = Image.open(io.BytesIO(picture.png)).quantize(colors=128, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    small = MapPicture(buffer.getvalue(), width, height, picture.labels_drawn, picture.labels_total, picture.points)
    return small.markdown(title or "cluster map"), len(small.png)
