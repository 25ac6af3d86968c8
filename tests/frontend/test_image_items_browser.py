"""Image items in real Chromium, with a real worker: a policy lead imports a zip of images with a JSON Lines file on
the import page (an SVG refused by line), and a reviewer labels them with the keyboard, the severe one blurred
until revealed with V, the image zoomed with Z."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labeling.models import Annotation, ImportJob, Item, ItemImage, Project, RankingEntry, RankingRow
from tests import image_samples as samples
from tests.browser import log_in, wait_js
from tests.conftest import REDIS_NEEDED, require_service
from tests.factories import member
from tests.frontend.test_labelling_browser import SCREENSHOTS, make_sms_project, press, wait_for_item
from tests.frontend.test_roles_browser import new_page, no_csp_violations
from tests.learning.worker_harness import Worker, purge_broker, redis_available, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.postgres, pytest.mark.slow]

IMAGE_STATE = """() => {
  const img = document.getElementById('item-image');
  const fig = document.getElementById('item-figure');
  return {hidden: fig.hidden, loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth,
          filter: getComputedStyle(img).filter, zoomed: fig.dataset.zoomed, src: img.getAttribute('src')};
}"""


def rank_after_the_worker(project: Project, suggestions: dict[str, str]) -> None:
    """Once the worker's own cold-start ranking is active, a later one serving ``suggestions`` in order."""
    wait_until(lambda: Project.objects.get(pk=project.pk).active_ranking_version is not None, timeout=60,
               what="the worker's first ranking", worker=None)
    version = int(Project.objects.get(pk=project.pk).active_ranking_version or 0) + 100
    items = {item.external_id: item for item in Item.objects.filter(project=project)}
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=version, start_rank=0, rows=[
        RankingRow(item_id=items[key].pk, score=0.9 - n / 100, reason="uncertainty", suggested_label=label,
                   suggested_confidence=0.7) for n, (key, label) in enumerate(suggestions.items())])
    RankingEntry.objects.activate(project_id=project.pk, ranking_version=version)


@pytest.fixture
def worker(postgres_only: None, transactional_db: Any, settings: Any, tmp_path: Path) -> Iterator[Worker]:
    require_service("Redis", redis_available(), REDIS_NEEDED)
    # The web process and the worker share the upload folder and the image storage (SIFT_DATA_DIR/images).
    settings.IMPORT_ROOT = tmp_path / "imports"
    settings.STORAGES = {**settings.STORAGES, "images": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "images")}}}
    purge_broker()
    started = Worker(SIFT_DATA_DIR=str(tmp_path))
    yield started
    started.stop()
    purge_broker()


def test_import_a_zip_of_images_and_label_them_with_the_keyboard(worker: Worker, chromium: Any, live_server: Any,
                                                                 tmp_path: Path) -> None:
    project, _ = make_sms_project(slug="pics", n_items=0, embedder="hashing")
    member(project, username="lead", role="policy_lead")
    rows = [{"external_id": "img-1", "text": "Your parcel is waiting: pay the fee at parcel-fee.example",
             "image": "images/parcel.jpg"},
            {"external_id": "img-2", "image": "images/lunch.png"},
            {"external_id": "img-3", "text": "lovely day", "image": "images/logo.svg"}]
    files = {"images/parcel.jpg": samples.photo(1200, 800), "images/lunch.png": samples.photo(300, 200, fmt="PNG"),
             "images/logo.svg": samples.SVG_WITH_SCRIPT}
    upload = tmp_path / "batch.zip"
    upload.write_bytes(samples.zip_upload(rows, files))

    page = new_page(chromium, live_server)
    log_in(page, "lead", next_url="/projects/pics/import/")
    page.set_input_files("#import-file", str(upload))
    page.click("#import-submit")
    page.wait_for_selector(".job")
    wait_js(page, "() => document.body.dataset.imports === 'idle'", timeout=120)
    job = ImportJob.objects.get(project=project)
    assert (job.status, job.created, job.error_count, job.errors) == ("done", 2, 1, [
        {"line": 3, "error": "image: SVG is not accepted (vector files can carry script); send PNG, JPEG, GIF or "
                             "WebP"}])
    assert sorted(ItemImage.objects.values_list("item__external_id", flat=True)) == ["img-1", "img-2"]
    no_csp_violations(page)
    page.context.close()

    # The model predicts phishing (severe) for img-1: served first, blurred, image and all.
    rank_after_the_worker(project, {"img-1": "spam/phishing", "img-2": "ham"})
    reviewer = new_page(chromium, live_server)
    log_in(reviewer, "rev", next_url="/projects/pics/label/")
    assert wait_for_item(reviewer) == "img-1"
    wait_js(reviewer, "() => document.getElementById('item-image').complete && "
                      "document.getElementById('item-image').naturalWidth > 0")
    state = reviewer.evaluate(IMAGE_STATE)
    img1 = Item.objects.get(external_id="img-1")
    assert (state["hidden"], state["loaded"], state["width"], state["src"]) == (
        False, True, 1200, f"/api/projects/pics/items/{img1.pk}/image/display")
    assert "blur" in state["filter"] and reviewer.is_visible("#blur-cover")
    press(reviewer, "z")  # no zooming into a hidden image
    assert reviewer.evaluate(IMAGE_STATE)["zoomed"] == "false"
    reviewer.screenshot(path=str(SCREENSHOTS / "label-image-blurred.png"), full_page=False)
    press(reviewer, "v")
    assert reviewer.evaluate(IMAGE_STATE)["filter"] == "none"
    reviewer.screenshot(path=str(SCREENSHOTS / "label-image.png"), full_page=False)
    press(reviewer, "z")
    assert reviewer.evaluate(IMAGE_STATE)["zoomed"] == "true"
    press(reviewer, "Escape")
    assert reviewer.evaluate(IMAGE_STATE)["zoomed"] == "false"
    press(reviewer, "2", "1")  # phishing
    assert wait_for_item(reviewer, not_id="img-1") == "img-2"
    wait_js(reviewer, "() => document.getElementById('item-image').naturalWidth === 300")
    assert reviewer.text_content("#item-text") == "[image: lunch.png]"
    assert reviewer.evaluate(IMAGE_STATE)["filter"] == "none"
    press(reviewer, "1")  # ham
    wait_js(reviewer, "() => document.getElementById('labeller').classList.contains('is-done')", timeout=30)
    assert dict(Annotation.objects.values_list("item__external_id", "labels")) == {
        "img-1": ["spam/phishing"], "img-2": ["ham"]}
    no_csp_violations(reviewer)
