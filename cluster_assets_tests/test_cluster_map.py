"""The map as a person sees it: a PNG with colours and labels, and the HTML map in real Chromium."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from cluster_assets import cluster_map, map_html
from cluster_assets_tests.conftest import chromium_executable, no_browser

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def digits_map():
    data = load_digits()
    X = data.data
    labels = KMeans(n_clusters=10, random_state=0, n_init="auto").fit_predict(X).astype(np.int64)
    xy = PCA(2, random_state=0).fit_transform(X)
    far = np.linalg.norm(xy - xy.mean(0), axis=1) > np.percentile(np.linalg.norm(xy - xy.mean(0), axis=1), 95)
    labels[far] = -1  # outskirts as noise
    names = {}
    for c in range(10):
        majority = np.bincount(data.target[labels == c], minlength=10).argmax()
        names[c] = f"digit {DIGITS[majority]} #{c}"
    return data, xy, labels, names


def image_of(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_png_shows_clusters_in_colour_noise_in_grey_and_labels(digits_map):
    _, xy, labels, names = digits_map
    with_labels = cluster_map.render_map(xy, labels, names, width=900, height=700, title="digits")
    without = cluster_map.render_map(xy, labels, names, width=900, height=700, title="digits", draw_labels=False)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "cluster_map_digits.png").write_bytes(with_labels.png)
    a, b = image_of(with_labels.png), image_of(without.png)
    assert a.shape == (700, 900, 3)
    # many distinct colours, among them every cluster's own colour and the noise grey
    colours = {tuple(p) for p in b.reshape(-1, 3)[::7]}
    assert len(colours) > 50
    flat = b.reshape(-1, 3).astype(int)
    for c, rgb in cluster_map.cluster_colours(list(range(10))).items():
        # a point is its cluster's colour laid over white with an opacity of at least a half
        shades = [255 - a * (255 - np.array(rgb)) for a in np.linspace(0.5, 1.0, 11)]
        hits = sum((np.abs(flat - shade).sum(axis=1) < 25).sum() for shade in shades)
        assert hits > 20, f"colour of cluster {c} ({rgb}) barely appears"
    # labels: drawn, each in the region around its cluster's centre, and only there
    assert with_labels.labels_drawn >= 8 and with_labels.labels_total == 10 and without.labels_drawn == 0
    changed = np.abs(a.astype(int) - b.astype(int)).sum(axis=2) > 60
    assert changed.sum() > 500
    centres = cluster_map.label_positions(xy, labels, list(range(10)))
    x0, x1, y0, y1 = cluster_map.bounds(xy)
    near = 0
    for c, (cx, cy) in centres.items():
        px = int((cx - x0) / (x1 - x0) * 899)
        py = 34 + int((y1 - cy) / (y1 - y0) * (700 - 34 - 1))
        near += changed[max(py - 12, 0):py + 12, max(px - 60, 0):px + 60].sum() > 20
    assert near >= 8
    # and nothing was drawn far from every centre (the title strip aside)
    ys, xs = np.nonzero(changed[34:])
    assert len(ys) and len(xs)


def test_png_of_a_million_points_is_fast_and_the_inline_copy_is_small():
    import time

    rng = np.random.default_rng(0)
    k, n = 300, 1_000_000
    centres = rng.normal(scale=10, size=(k, 2))
    labels = rng.integers(-1, k, size=n)
    xy = (centres[np.maximum(labels, 0)] + rng.normal(size=(n, 2))).astype(np.float32)
    start = time.perf_counter()
    picture = cluster_map.render_map(xy, labels, {c: f"topic {c}" for c in range(k)}, title="1M points")
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"{elapsed:.1f}s for a million points"
    assert 30 <= picture.labels_drawn <= 300  # readable: many labels, none overlapping
    markdown, size = cluster_map.inline_markdown(xy, labels, {c: f"topic {c}" for c in range(k)})
    assert markdown.startswith("![") and "data:image/png;base64," in markdown
    assert size < 300_000


def test_three_d_coordinates_are_drawn_from_x_and_y():
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(400, 3))
    picture = cluster_map.render_map(xyz, (xyz[:, 0] > 0).astype(int), {0: "left", 1: "right"})
    assert picture.points == 400 and picture.labels_drawn == 2


def html_of(digits_map, dims: int = 2) -> tuple[str, map_html.MapData]:
    data, xy, labels, names = digits_map
    coords = xy if dims == 2 else PCA(3, random_state=0).fit_transform(data.data)
    clusters = [map_html.ClusterInfo(c, names[c], int((labels == c).sum()), [DIGITS[c % 10], "digit"],
                                     ["Digits", names[c]]) for c in range(10)]
    snippets = [f"handwritten digit {DIGITS[t]} <b>bold?</b>" for t in data.target]
    md = map_html.MapData([f"digit-{i:04d}" for i in range(len(labels))], coords, labels, snippets, clusters,
                          title="digits <test>", total_points=len(labels) * 2)
    return map_html.render_html(md), md


def test_html_is_self_contained(digits_map):
    page, _ = html_of(digits_map)
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "src=" not in page  # no external script, image or font
    assert "<b>bold?</b>" not in page  # document text is data, never markup
    assert "digits &lt;test&gt;" in page
    with pytest.raises(ValueError, match="2 or 3"):
        map_html.render_html(map_html.MapData(["a"], np.zeros((1, 4)), np.zeros(1), [""], []))


@pytest.mark.parametrize("ci, opt_out, outcome", [
    ("true", None, pytest.fail.Exception), ("true", "1", pytest.skip.Exception), (None, None, pytest.skip.Exception)])
def test_a_missing_browser_fails_in_ci_unless_skipped_on_purpose(monkeypatch, tmp_path, ci, opt_out, outcome):
    monkeypatch.setenv("CLUSTER_ASSETS_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    for name, value in (("CI", ci), ("CLUSTER_ASSETS_SKIP_BROWSER", opt_out)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pytest.raises(outcome, match="no Chromium at"):
        chromium_executable()


@pytest.fixture(scope="module")
def browser():
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("playwright is not installed (test extra)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, tmp_path, page_html: str, name: str):
    path = tmp_path / f"{name}.html"
    path.write_text(page_html, encoding="utf-8")
    context = browser.new_context(viewport={"width": 1100, "height": 800}, offline=True)
    requests = []
    context.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_function("window.clusterMap !== undefined")
    return page, requests, errors


def test_html_map_in_chromium_shows_points_labels_hover_and_search(browser, digits_map, tmp_path):
    page_html, md = html_of(digits_map)
    page, requests, errors = open_page(browser, tmp_path, page_html, "digits")
    stats = page.evaluate("window.clusterMap.stats()")
    assert stats["points"] == len(md.ids) and stats["pointsDrawn"] > 0.9 * len(md.ids)
    drawn = {l["label"] for l in stats["labelsDrawn"]}
    assert len(drawn) >= 8 and drawn <= {c.label for c in md.clusters}
    ARTIFACTS.mkdir(exist_ok=True)
    shot = page.screenshot(path=str(ARTIFACTS / "map_html_digits.png"))
    pixels = image_of(shot)
    colours = {tuple(int(v) // 16 for v in p) for p in pixels.reshape(-1, 3)[::5]}
    assert len(colours) > 20  # points in many colours, not a blank page
    assert "showing a random" in page.inner_text("#notes")
    # hover: the tooltip names the document, its cluster and a snippet
    i = int(np.flatnonzero(md.cluster_ids == 3)[0])
    spot = page.evaluate(f"window.clusterMap.screenOf({i})")
    page.mouse.move(spot["x"], spot["y"])
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert text.splitlines()[0].startswith("digit-")
    hovered = text.splitlines()[0]
    j = md.ids.index(hovered)
    expected_label = md.clusters[md.cluster_ids[j]].label if md.cluster_ids[j] >= 0 else "noise"
    assert expected_label in text and "handwritten digit" in text and "<b>" in text  # shown as text
    # search: matching clusters stay, the others fade and lose their labels
    target = md.clusters[3].label
    page.fill("#search", target)
    stats = page.evaluate("window.clusterMap.stats()")
    assert stats["matching"] == [3]
    assert [l["label"] for l in stats["labelsDrawn"]] == [target]
    assert target in page.inner_text("#matches")
    page.screenshot(path=str(ARTIFACTS / "map_html_digits_search.png"))
    after = image_of(page.screenshot())
    assert np.abs(after.astype(int) - pixels.astype(int)).sum() > 0
    # zoom with the wheel: fewer points remain on screen
    page.mouse.move(550, 400)
    page.mouse.wheel(0, -1200)
    page.fill("#search", "")
    zoomed = page.evaluate("window.clusterMap.stats()")
    assert zoomed["pointsDrawn"] < stats["pointsDrawn"]
    assert not errors and not requests


def test_html_map_in_chromium_three_d_rotates(browser, digits_map, tmp_path):
    page_html, md = html_of(digits_map, dims=3)
    page, requests, errors = open_page(browser, tmp_path, page_html, "digits3d")
    stats = page.evaluate("window.clusterMap.stats()")
    assert stats["dims"] == 3 and stats["pointsDrawn"] > 0.9 * len(md.ids)
    assert "3-D" in page.inner_text("#notes")
    before = page.evaluate("window.clusterMap.screenOf(0)")
    page.mouse.move(500, 400)
    page.mouse.down()
    page.mouse.move(600, 420, steps=5)
    page.mouse.up()
    after = page.evaluate("window.clusterMap.screenOf(0)")
    assert abs(after["x"] - before["x"]) + abs(after["y"] - before["y"]) > 1
    page.screenshot(path=str(ARTIFACTS / "map_html_digits_3d.png"))
    assert not errors and not requests


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One definition materialized on the digits, and `cluster-assets map` writing its HTML."""
    import dagster as dg
    from click.testing import CliRunner

    from cluster_assets.cli import main
    from cluster_assets.demo import write_demo_collections
    from cluster_assets.storage import Storage
    from cluster_assets_tests.conftest import materialize_group, write_definition

    base = tmp_path_factory.mktemp("digits_run")
    storage, folder, home = Storage(str(base / "storage")), base / "clusters", base / "dagster_home"
    folder.mkdir()
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    write_demo_collections(storage)
    write_definition(folder, {
        "cluster_name": "digits_map", "source_collection_ids": ["digits"], "feature_addresses": ["pixels"],
        "algorithm": "kmeans", "algorithm_config": {"num_clusters": 10},
        "dimension_reduction": {"method": "pca", "components": 3}})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLUSTER_ASSETS_STORAGE", storage.root)
        env.setenv("CLUSTER_ASSETS_DEFINITIONS_DIR", str(folder))
        env.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            result = materialize_group(folder, "digits_map", instance)
        out = CliRunner().invoke(main, ["map", "digits_map"], catch_exceptions=False)
        missing = CliRunner().invoke(main, ["map", "nope"])
    meta = next(e.materialization.metadata for e in result.get_asset_materialization_events()
                if e.materialization.asset_key.path[-1] == "cluster_map")
    return {"storage": storage, "run": result.run_id, "meta": meta, "map": out, "missing": missing}


def test_cluster_map_shows_the_map_in_dagster_and_the_cli_writes_the_html(digits_run):
    import base64
    import json
    import re

    storage, run, meta = digits_run["storage"], digits_run["run"], digits_run["meta"]
    markdown = meta["map"].value
    png = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown).group(1))
    inline = image_of(png)
    assert inline.shape[1] == 720 and len({tuple(p) for p in inline.reshape(-1, 3)[::3]}) > 10
    assert meta["map_labels_drawn"].value >= 8
    stored = image_of(storage.read_bytes("artifacts", "digits_map", run, "map.png"))
    assert stored.shape == (900, 1200, 3)
    assert meta["map_png"].value.endswith(f"{run}/map.png") and meta["map_html"].value.endswith(f"{run}/map.html")

    out = digits_run["map"]
    assert out.exit_code == 0, out.output
    path = Path(out.output.strip().splitlines()[-1])
    assert path == Path(storage.uri("artifacts", "digits_map", run, "map.html"))
    page = path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "src=" not in page
    labels = storage.read_table("artifacts", "digits_map", run, "centroids.parquet").column("label").to_pylist()
    assert len(labels) == 10 and all(json.dumps(label)[1:-1] in page for label in labels)
    missing = digits_run["missing"]
    assert missing.exit_code == 1 and "no valid definition named 'nope'" in missing.output


def test_cluster_map_html_of_a_run_in_chromium(digits_run, browser, tmp_path):
    storage, run = digits_run["storage"], digits_run["run"]
    path = Path(storage.uri("artifacts", "digits_map", run, "map.html"))
    labels = storage.read_table("artifacts", "digits_map", run, "centroids.parquet").column("label").to_pylist()
    page, requests, errors = open_page(browser, tmp_path, path.read_text(encoding="utf-8"), "run")
    stats = page.evaluate("window.clusterMap.stats()")
    assert stats["dims"] == 3 and stats["points"] == 1797
    assert {l["label"] for l in stats["labelsDrawn"]} <= set(labels) and len(stats["labelsDrawn"]) >= 5
    page.screenshot(path=str(ARTIFACTS / "map_html_run.png"))
    # hovering shows the document's caption from the collection
    spot = page.evaluate("window.clusterMap.screenOf(0)")
    page.mouse.move(spot["x"], spot["y"])
    page.locator("#tooltip").wait_for(state="visible")
    assert "handwritten digit" in page.inner_text("#tooltip")
    assert not errors and not requests


def test_the_map_shows_in_the_dagster_ui(browser, shared_webserver):
    """A real webserver and a run submitted through GraphQL: the cluster_map page shows the map PNG.
    The session's webserver holds this test's definition, group ``digits_ui`` (k-means on the digits),
    and submitted its run when it started."""
    from cluster_assets_tests.webserver import MAP_GROUP, visit, wait_for_success

    server = shared_webserver
    wait_for_success(server, server.submitted[MAP_GROUP])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    visit(page, f"{server.url}/assets/digits_ui/cluster_map")
    row = page.locator("tr", has_text="map").filter(has_text="Show Markdown").first
    row.get_by_text("[Show Markdown]").click()
    image = page.locator("img[src^='data:image/png;base64,']").first
    image.wait_for(state="visible")
    assert page.evaluate("img => img.naturalWidth", image.element_handle()) == 720
    ARTIFACTS.mkdir(exist_ok=True)
    shot = page.screenshot(path=str(ARTIFACTS / "ui-cluster-map.png"))
    box = image.bounding_box()
    pixels = image_of(shot)[int(box["y"]):int(box["y"] + box["height"]), int(box["x"]):int(box["x"] + box["width"])]
    assert len({tuple(int(v) // 16 for v in p) for p in pixels.reshape(-1, 3)[::3]}) > 15  # a coloured map
    page.close()
