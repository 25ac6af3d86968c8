"""Every role's job in the browser, end to end: Chromium, a live server, PostgreSQL, Redis and a REAL Celery worker.

An admin creates a project from the New project page, adds a reviewer and an ML engineer on the Members page,
uploads a CSV on the Import page and watches the worker's progress bar finish; the reviewer labels five items with
the keyboard; the ML engineer downloads Parquet from the Export page, and the file reads back with exactly the rows
that were labelled. Along the way each new page is saved under docs/screenshots/ (the README links them).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from labeling.models import Annotation, ImportJob, Item, Project
from learning.models import ModelVersion
from tests.browser import INIT_SCRIPT, log_in, wait_js
from tests.conftest import REDIS_NEEDED, require_service
from tests.factories import UserFactory
from tests.learning.worker_harness import Worker, purge_broker, redis_available, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.postgres, pytest.mark.slow]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TAXONOMY_JSON = ('{"name": "SMS policy", "multi_label": false, "labels": ['
                 '{"key": "ham", "name": "Ham", "description": "An ordinary message."}, '
                 '{"key": "spam", "name": "Spam", "description": "Unsolicited or fraudulent."}]}')
N_ITEMS = 40
WORDS = ("free prize call now", "see you at lunch", "WIN cash txt STOP", "running late sorry", "claim your reward")


@pytest.fixture
def worker(postgres_only: None, transactional_db: Any, settings: Any, tmp_path: Path) -> Iterator[Worker]:
    require_service("Redis", redis_available(), REDIS_NEEDED)
    # The web process (the live server thread) and the worker share the upload and export folders.
    settings.IMPORT_ROOT = tmp_path / "imports"
    settings.EXPORT_ROOT = tmp_path / "exports"
    purge_broker()
    started = Worker(SIFT_DATA_DIR=str(tmp_path))
    yield started
    started.stop()
    purge_broker()


def new_page(chromium: Any, live_server: Any) -> Any:
    """A browser context that, unlike tests/browser.py's ``page``, lets the pages' tasks reach the real broker."""
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900},
                                   device_scale_factor=1, accept_downloads=True)
    context.add_init_script(INIT_SCRIPT)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(f"pageerror: {exc}"))
    return page


def no_csp_violations(page: Any) -> None:
    assert page.evaluate("window.__csp") == [], "CSP violations"
    assert page.errors == []


def test_admin_reviewer_and_engineer_do_their_jobs_in_the_browser(
        worker: Worker, chromium: Any, live_server: Any, tmp_path: Path) -> None:
    from tests.conftest import add_project_permission

    admin = UserFactory(username="boss")
    admin.user_permissions.add(add_project_permission())
    UserFactory(username="rita")
    UserFactory(username="eng")

    # 1. The admin creates the project from the page.
    page = new_page(chromium, live_server)
    log_in(page, "boss")
    page.click("#new-project")
    page.fill("#f-name", "SMS triage")
    page.fill("#f-slug", "sms-triage")
    page.select_option("#f-embedder", "hashing")
    page.fill("#f-overlap", "1")
    page.fill("#f-seeds", "free prize\nclaim now")
    page.fill("#f-taxonomy", TAXONOMY_JSON)
    page.screenshot(path=str(SCREENSHOTS / "project-new.png"), full_page=True)
    page.click("#create-project")
    page.wait_for_url("**/projects/sms-triage/members/")
    project = Project.objects.get(slug="sms-triage")
    assert (project.name, project.embedder, project.seed_queries) == ("SMS triage", "hashing",
                                                                      ["free prize", "claim now"])

    # 2. ...adds a reviewer and an ML engineer.
    for username, role in (("rita", "reviewer"), ("eng", "ml_engineer")):
        page.fill("#m-username", username)
        page.select_option("#m-role", role)
        page.click("#m-submit")
        page.wait_for_selector(f'tr[data-username="{username}"]')
    assert dict(project.memberships.values_list("user__username", "role")) == {
        "boss": "admin", "rita": "reviewer", "eng": "ml_engineer"}
    page.screenshot(path=str(SCREENSHOTS / "members.png"), full_page=True)
    page.goto("/projects/sms-triage/settings/")
    assert "Vectors, rankings and models are keyed by it" in page.text_content("#settings-fixed")
    page.screenshot(path=str(SCREENSHOTS / "settings.png"), full_page=True)

    # 3. ...uploads a CSV and watches the worker's progress bar finish.
    rows = [(f"sms-{n}", f"{WORDS[n % len(WORDS)]} #{n}") for n in range(N_ITEMS)]
    csv_path = tmp_path / "batch.csv"
    csv_path.write_text("external_id,text,channel\n" + "".join(f"{e},{t},sms\n" for e, t in rows) + "bad,,sms\n")
    page.goto("/projects/sms-triage/import/")
    page.set_input_files("#import-file", str(csv_path))
    page.click("#import-submit")
    page.wait_for_selector(".job")
    wait_js(page, "() => document.body.dataset.imports === 'idle'", timeout=120)
    job = page.locator(".job").first
    assert job.get_attribute("data-status") == "done"
    assert [job.locator(sel).text_content() for sel in (".job-read", ".job-created", ".job-errors")] == [
        str(N_ITEMS + 1), str(N_ITEMS), "1"]
    assert page.evaluate("document.querySelector('.job-bar').value") == 100
    assert job.locator(".job-errors-link").is_visible()
    stored = ImportJob.objects.get(project=project)
    assert (stored.status, stored.created, stored.error_count, stored.errors) == (
        "done", N_ITEMS, 1, [{"line": N_ITEMS + 2, "error": "text: must not be empty"}])
    page.reload()  # the state is the database's: a reload shows the same finished job
    assert page.locator(".job").first.get_attribute("data-status") == "done"
    page.screenshot(path=str(SCREENSHOTS / "import.png"), full_page=True)
    no_csp_violations(page)
    assert Item.objects.filter(project=project).count() == N_ITEMS
    page.context.close()

    # 4. The reviewer labels five items with the keyboard.
    reviewer = new_page(chromium, live_server)
    log_in(reviewer, "rita", next_url="/projects/sms-triage/label/")
    labelled: dict[str, str] = {}
    for n in range(5):
        wait_js(reviewer, """(done) => {
            const t = document.getElementById('item-external-id').textContent;
            return t !== '…' && !done.includes(t) && !document.getElementById('labeller').classList.contains('is-busy');
        }""", list(labelled))
        shown = reviewer.text_content("#item-external-id")
        key, label = ("2", "spam") if n % 2 else ("1", "ham")
        reviewer.keyboard.press(key)
        labelled[shown] = label
    wait_until(lambda: Annotation.objects.filter(project=project).count() == 5, timeout=30, what="five answers")
    assert {a.item.external_id: a.labels for a in Annotation.objects.filter(project=project)
            .select_related("item")} == {external_id: [label] for external_id, label in labelled.items()}
    no_csp_violations(reviewer)
    reviewer.context.close()

    # 5. The ML engineer exports Parquet from the page; the file reads back with exactly those rows.
    engineer = new_page(chromium, live_server)
    log_in(engineer, "eng", next_url="/projects/sms-triage/export/")
    engineer.select_option("#e-format", "parquet")
    engineer.screenshot(path=str(SCREENSHOTS / "export.png"), full_page=True)
    with engineer.expect_download() as download_info:
        engineer.click("#e-download")
    download = download_info.value
    assert download.suggested_filename == "sms-triage.parquet"
    table = pq.read_table(io.BytesIO(Path(download.path()).read_bytes())).to_pylist()
    texts = dict(rows)
    assert sorted((r["external_id"], r["text"], r["labels"], r["label_source"], r["n_annotators"]) for r in table) == (
        sorted((e, texts[e], [label], "majority", 1) for e, label in labelled.items()))

    # The models page, once the worker has trained on those labels.
    wait_until(lambda: ModelVersion.objects.filter(project=project, status="active").exists(), timeout=180,
               what="an active model", worker=worker)
    engineer.goto("/projects/sms-triage/models/")
    engineer.wait_for_selector("#models-table tr[data-version]")
    engineer.screenshot(path=str(SCREENSHOTS / "models.png"), full_page=True)
    no_csp_violations(engineer)
    engineer.context.close()
