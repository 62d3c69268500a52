"""The Dagster UI, looked at as a person would: real headless Chromium against a real webserver.

Debian's chromium (``apt-get install chromium``, done by .ci/run) is driven by
Playwright for Python; Playwright's own browser download is never used. Without
the browser or Playwright the test is skipped, saying why; in CI (``CI`` set) it
fails instead, unless ``CLUSTER_ASSETS_SKIP_BROWSER=1``. Screenshots land in
``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster_assets_tests.conftest import REPO, chromium_executable, no_browser
from cluster_assets_tests.webserver import LOCATION, UI_GROUP, visit, wait_for_success

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"
TIMEOUT_MS = 60_000


def _browser_or_skip():
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("playwright (the test extra) is not installed")
    return sync_playwright, executable


@pytest.fixture(scope="module")
def finished_run(shared_webserver):
    """The run of this module's definition (group ``blobs``, with a nightly schedule in Europe/Paris and an
    event sensor), submitted through GraphQL when the session's webserver started, once it succeeded; and
    a browser page to look at it."""
    sync_playwright, executable = _browser_or_skip()
    server = shared_webserver
    run_id = wait_for_success(server, server.submitted[UI_GROUP])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        yield server, page, run_id
        browser.close()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 10_000  # a real rendering, not a blank page
    return path


def test_asset_graph_of_the_definition(finished_run):
    server, page, _ = finished_run
    visit(page, f"{server.url}/locations/{LOCATION}/asset-groups/blobs")
    page.get_by_text("Asset Group in").first.wait_for()
    for stage in ("sample", "embeddings", "assignments", "labels", "reduced_coords"):
        page.get_by_text(stage, exact=True).first.wait_for(state="visible")
    page.get_by_text("enrich…_collection").or_(page.get_by_text("enriched_collection")).first.wait_for()
    page.get_by_text("points", exact=True).first.wait_for()  # the source collection, upstream
    shot(page, "asset-graph")


def test_schedules_and_sensors_of_the_definition(finished_run):
    server, page, _ = finished_run
    visit(page, f"{server.url}/automation")
    page.get_by_text("blobs__nightly").first.wait_for(state="visible")
    page.get_by_text("blobs__on_arrival").first.wait_for(state="visible")
    # each row's details load after the names: wait for them before reading the page
    page.get_by_text("Standard sensor").first.wait_for(state="visible")
    page.get_by_text("03:00").first.wait_for(state="visible")  # the cron schedule, shown in its timezone
    shot(page, "automation")


def test_finished_run_with_its_metadata(finished_run):
    server, page, run_id = finished_run
    visit(page, f"{server.url}/runs/{run_id}")
    page.get_by_text("RUN_SUCCESS").first.wait_for(state="visible")
    page.get_by_text("num_clusters").first.wait_for()
    body = page.inner_text("body")
    assert run_id[:8] in body and "Success" in body
    assert "members_artifact" in body or "centroids_artifact" in body
    shot(page, "run")

    visit(page, f"{server.url}/assets/blobs/labels")  # the fit's readout and its checks
    page.get_by_text("num_clusters").first.wait_for(state="visible")
    page.get_by_text("Latest check results").first.wait_for()
    body = page.inner_text("body")
    assert "silhouette" in body and "kmeans" in body
    shot(page, "asset-metadata")
