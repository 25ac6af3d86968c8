"""Taxonomy pages: who may open them, what they render, and the editor driven in a real browser."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from django.test import Client

from labeling.models import Label, LabelMigration, Project, TaxonomyVersion
from labeling.services.taxonomy import taxonomy_draft_publish, taxonomy_draft_save
from tests.conftest import SMS_TAXONOMY
from tests.factories import ProjectFactory, member

GUIDED: dict[str, Any] = {
    "name": "SMS moderation",
    "labels": [
        {"key": "ham", "name": "Ham", "description": "Ordinary **personal** message."},
        {"key": "spam", "name": "Spam <b>x</b>", "positive_examples": ["<img src=x onerror=alert(1)>"],
         "description": "Unwanted. <script>alert(1)</script> [bad](javascript:alert(1)) "
                        "[ok](https://example.org/p) ![img](https://tracker.example/p.png)"},
    ],
}


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def people(db: Any) -> dict[str, Any]:
    project = ProjectFactory(slug="sms", taxonomy=GUIDED)
    other = ProjectFactory(slug="other", taxonomy=SMS_TAXONOMY)
    return {
        "project": project,
        "lead": member(project, username="lead", role="policy_lead"),
        "admin": member(project, username="boss", role="admin"),
        "reviewer": member(project, username="rev", role="reviewer"),
        "outsider": member(other, username="out", role="admin"),
    }


@pytest.mark.django_db
def test_editor_is_for_leads_and_admins_only(people: dict[str, Any]) -> None:
    for who in ("lead", "admin"):
        response = client_for(people[who]).get("/projects/sms/taxonomy/")
        assert response.status_code == 200
        config = json.loads(re.search(rb'<script id="taxonomy-config" type="application/json">(.*?)</script>',
                                      response.content, re.S).group(1))  # type: ignore[union-attr]
        assert (config["based_on"], config["base_keys"]) == (1, ["ham", "spam"])
        assert config["urls"]["draft"] == "/api/projects/sms/taxonomy/draft"
    assert client_for(people["reviewer"]).get("/projects/sms/taxonomy/").status_code == 403
    assert client_for(people["outsider"]).get("/projects/sms/taxonomy/").status_code == 404
    anonymous = Client().get("/projects/sms/taxonomy/")
    assert (anonymous.status_code, anonymous["Location"]) == (302, "/login/?next=/projects/sms/taxonomy/")


@pytest.mark.django_db
def test_editor_page_has_no_inline_script_or_style(people: dict[str, Any]) -> None:
    html = client_for(people["lead"]).get("/projects/sms/taxonomy/").content.decode()
    scripts = re.findall(r"<script([^>]*)>", html)
    assert all('type="application/json"' in attrs or "src=" in attrs for attrs in scripts)
    assert "<style" not in html and " style=" not in html and "onclick" not in html


@pytest.mark.django_db
def test_guidelines_are_read_only_for_reviewers_and_sanitised(people: dict[str, Any]) -> None:
    response = client_for(people["reviewer"]).get("/projects/sms/guidelines/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<p>Ordinary <strong>personal</strong> message.</p>" in html
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html
    assert '<a href="https://example.org/p" rel="noopener noreferrer nofollow">ok</a>' in html
    assert "<img" not in html and "tracker.example" not in html.replace("![img](https://tracker.example/p.png)", "")
    assert "Spam &lt;b&gt;x&lt;/b&gt;" in html  # names are text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # examples are text
    # No editing affordances and no draft for reviewers.
    assert 'href="/projects/sms/taxonomy/"' not in html
    assert client_for(people["reviewer"]).get("/projects/sms/guidelines/?draft=1").status_code == 403
    assert client_for(people["outsider"]).get("/projects/sms/guidelines/").status_code == 404
    assert client_for(people["lead"]).get("/projects/sms/guidelines/?draft=1").status_code == 404  # no draft yet


@pytest.mark.django_db
def test_history_page_shows_versions_diff_and_audit(people: dict[str, Any]) -> None:
    project, lead = people["project"], people["lead"]
    taxonomy_draft_save(actor=lead, project=project, document={
        "name": "SMS moderation", "labels": [
            {"key": "ham", "name": "Ham", "description": "Personal."},
            {"key": "junk", "name": "Junk"}]},
        migrations=[{"kind": "rename", "sources": ["spam"], "targets": ["junk"]}])
    taxonomy_draft_publish(actor=lead, project=project, changelog="spam is now junk")
    html = client_for(people["reviewer"]).get("/projects/sms/taxonomy/history/?from=1&to=2").content.decode()
    assert re.search(r'<tr data-version="2">.*?spam is now junk', html, re.S)
    assert '<ul class="diff-added"><li><code>junk</code> Junk</li></ul>' in html
    assert '<ul class="diff-removed"><li><code>spam</code> Spam &lt;b&gt;x&lt;/b&gt;</li></ul>' in html
    assert "<strong>rename</strong> spam → junk" in html
    assert '<td class="diff-old">Ordinary **personal** message.</td><td class="diff-new">Personal.</td>' in \
        re.sub(r">\s+<", "><", html)
    assert "<strong>taxonomy.publish</strong> by lead" in html
    assert "<strong>taxonomy.migrate</strong> by lead" in html
    assert client_for(people["outsider"]).get("/projects/sms/taxonomy/history/").status_code == 404


# --- The editor in a real browser ---------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_lead_adds_a_child_label_publishes_and_the_labelling_page_shows_it(page: Any) -> None:
    from tests.browser import log_in

    assert os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE") == "true"
    project = ProjectFactory(slug="sms", taxonomy=SMS_TAXONOMY)
    member(project, username="lead", role="policy_lead")

    log_in(page, "lead", next_url="/projects/sms/taxonomy/")
    page.wait_for_selector("body.tax-ready")
    assert page.locator("#draft-status").text_content() == \
        "No draft yet: you are editing a copy of v1. Saving creates the draft."
    assert page.locator("#tax-tree > li").evaluate_all("els => els.map(e => e.dataset.key)") == ["ham", "spam"]

    page.locator('li[data-key="spam"] > .tax-row button.add-child').click()
    page.fill("#f-key", "spam/phishing")
    page.fill("#f-name", "Phishing")
    page.fill("#f-description", "Asks for **passwords** or bank details.")
    page.fill("#f-positive", "Your account is locked, log in at http://bad.example")
    page.fill("#f-severity", "3")
    page.fill("#f-action", "remove")
    assert page.locator('li[data-key="spam"] li[data-key="spam/phishing"] .tax-name').text_content() == "Phishing"

    page.click("#preview-draft")
    page.wait_for_selector("#preview-result:not([hidden])")
    assert page.locator("#pv-items").text_content() == "0"
    assert page.locator("#messages").text_content() == "The draft can be published."

    page.fill("#changelog", "Phishing gets its own label")
    page.click("#publish")
    page.locator("#messages", has_text="Published v2.").wait_for()  # (wait_for_function would need eval: CSP)
    # The flash shows on the reloaded page before its draft request returns; wait for the page to be ready.
    page.wait_for_selector("body.tax-ready")
    assert page.locator("#draft-status").text_content() == \
        "No draft yet: you are editing a copy of v2. Saving creates the draft."

    project.refresh_from_db()
    version = TaxonomyVersion.objects.get(project=project, number=2)
    assert Project.objects.get(pk=project.pk).current_taxonomy_version_id == version.pk
    assert (version.number, version.status, version.changelog) == (2, "published", "Phishing gets its own label")
    child = Label.objects.get(version=version, key="spam/phishing")
    assert (child.parent.key, child.name, child.description, child.severity, child.action,  # type: ignore[union-attr]
            child.positive_examples) == ("spam", "Phishing", "Asks for **passwords** or bank details.", 3, "remove",
                                         ["Your account is locked, log in at http://bad.example"])
    assert not TaxonomyVersion.objects.filter(project=project, status="draft").exists()
    assert not LabelMigration.objects.filter(to_version=version).exists()

    # The labelling page (built by the queue engineer) shows the new label with its hotkey and guideline.
    page.goto("/projects/sms/label/")
    button = page.locator('button.label-btn[data-label-key="spam/phishing"]')
    assert button.locator(".label-name").text_content() == "Phishing"
    assert button.locator(".hotkey").text_content() == "1"  # first child of "spam"
    assert page.locator('button.label-btn[data-label-key="spam"] .hotkey').text_content() == "2"
    guideline = page.locator('article.guideline:has(code:text-is("spam/phishing"))')
    assert guideline.locator(".prose strong").text_content() == "passwords"
    assert page.evaluate("window.__csp") == []
    assert page.errors == []
