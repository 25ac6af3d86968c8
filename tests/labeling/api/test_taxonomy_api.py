"""The taxonomy endpoints: reads, draft editing, preview, publish, import/export, diff, and who may do what."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from labeling.models import Annotation, AuditEvent, Item, Label, LabelMigration, Project, TaxonomyVersion
from tests.conftest import SMS_TAXONOMY
from tests.factories import ItemFactory

pytestmark = pytest.mark.django_db

BASE = "/api/projects/sms/taxonomy"

V2: dict[str, Any] = {
    "name": "SMS moderation",
    "multi_label": False,
    "labels": [
        {"key": "ham", "name": "Ham", "description": "Ordinary personal message."},
        {"key": "junk", "name": "Junk", "description": "Unwanted. **Bold** <script>alert(1)</script>",
         "severity": 2, "action": "remove", "positive_examples": ["WIN A PRIZE"], "children": [
             {"key": "junk/phishing", "name": "Phishing", "description": "[policy](javascript:alert(1))"},
             {"key": "junk/promo", "name": "Promotion"},
         ]},
    ],
    "migrations": [{"kind": "split", "sources": ["spam"], "targets": ["junk/phishing", "junk/promo"],
                    "requeue_priority": 4}],
}


def snapshot(project: Project) -> dict[str, Any]:
    """Everything an edit endpoint could change, to assert a refused request changed nothing."""
    return {
        "versions": list(TaxonomyVersion.objects.filter(project=project).order_by("id")
                         .values_list("id", "number", "status", "name", "changelog")),
        "labels": list(Label.objects.filter(version__project=project).order_by("id")
                       .values_list("version_id", "key", "name", "description", "deprecated")),
        "migrations": list(LabelMigration.objects.filter(to_version__project=project).order_by("id")
                           .values_list("kind", "sources", "targets")),
        "current": Project.objects.get(pk=project.pk).current_taxonomy_version_id,
        "annotations": list(Annotation.objects.filter(project=project).order_by("id")
                            .values_list("mapped_labels", "mapped_taxonomy_version_id")),
        "items": list(Item.objects.filter(project=project).order_by("id").values_list("boost", "n_required")),
        "audit": AuditEvent.objects.count(),
    }


def current_number(project: Project) -> int | None:
    return Project.objects.filter(pk=project.pk).values_list("current_taxonomy_version__number", flat=True).first()


def with_spam_answer(cast: dict[str, Any]) -> Annotation:
    project = cast["project"]
    item = ItemFactory(project=project, external_id="m1")
    annotation = Annotation.objects.create(project=project, item=item, reviewer=cast["users"]["reviewer"],
                                           taxonomy_version=project.current_taxonomy_version, labels=["spam"],
                                           selection_reason="fallback_random")
    Item.objects.filter(pk=item.pk).update(n_done=1)
    return annotation


def test_current_taxonomy_tree_for_a_reviewer(cast: dict[str, Any], api_as: Any) -> None:
    response = api_as(cast["users"]["reviewer"]).get(f"{BASE}/")
    assert response.status_code == 200
    body = response.json()
    assert (body["number"], body["status"], body["name"], body["multi_label"]) == (1, "published", "SMS moderation",
                                                                                   False)
    assert [(n["key"], n["name"], n["description_html"], n["is_leaf"], n["path"]) for n in body["labels"]] == [
        ("ham", "Ham", "<p>Ordinary personal message.</p>\n", True, "labels[0]"),
        ("spam", "Spam", "<p>Unsolicited commercial or fraudulent message.</p>\n", True, "labels[1]")]


def test_full_edit_preview_publish_flow(cast: dict[str, Any], api_as: Any) -> None:
    annotation = with_spam_answer(cast)
    lead = api_as(cast["users"]["policy_lead"])

    empty = lead.get(f"{BASE}/draft").json()
    assert (empty["exists"], empty["based_on"], empty["migrations"]) == (False, 1, [])
    assert [n["key"] for n in empty["document"]["labels"]] == ["ham", "spam"]

    saved = lead.put(f"{BASE}/draft", V2, format="json")
    assert saved.status_code == 200, saved.content
    body = saved.json()
    assert (body["exists"], body["based_on"]) == (True, 1)
    assert body["migrations"] == V2["migrations"]
    junk = body["document"]["labels"][1]
    assert [c["key"] for c in junk["children"]] == ["junk/phishing", "junk/promo"]
    assert (junk["severity"], junk["action"], junk["positive_examples"]) == (2, "remove", ["WIN A PRIZE"])

    preview = lead.post(f"{BASE}/draft/preview")
    assert preview.status_code == 200
    assert {k: preview.json()[k] for k in ("publishable", "problems", "annotations_total", "annotations_mapped",
                                           "annotations_requeued", "items_requeued")} == {
        "publishable": True, "problems": [], "annotations_total": 1, "annotations_mapped": 0,
        "annotations_requeued": 1, "items_requeued": 1}
    assert preview.json()["migrations"][0]["items_requeued"] == 1

    assert lead.post(f"{BASE}/draft/publish", {"changelog": ""}, format="json").json()["detail"] == \
        "changelog: say what changed (it is shown in the history)"
    published = lead.post(f"{BASE}/draft/publish", {"changelog": "Spam split into phishing and promo"},
                          format="json")
    assert published.status_code == 201, published.content
    assert (published.json()["number"], published.json()["changelog"]) == (2, "Spam split into phishing and promo")
    junk_html = published.json()["labels"][1]["description_html"]
    assert junk_html == "<p>Unwanted. <strong>Bold</strong> &lt;script&gt;alert(1)&lt;/script&gt;</p>\n"
    assert published.json()["labels"][1]["children"][0]["description_html"] == \
        "<p>[policy](javascript:alert(1))</p>\n"

    annotation.refresh_from_db()
    assert (annotation.labels, annotation.mapped_labels) == (["spam"], None)
    assert annotation.mapped_taxonomy_version_id == \
        Project.objects.get(pk=cast["project"].pk).current_taxonomy_version_id
    assert list(Item.objects.filter(project=cast["project"]).values_list("boost", "n_required", "n_done")) == [
        (4, 2, 1)]
    current = api_as(cast["users"]["reviewer"]).get(f"{BASE}/").json()
    assert current["number"] == 2
    assert lead.get(f"{BASE}/draft").json()["exists"] is False

    versions = api_as(cast["users"]["reviewer"]).get(f"{BASE}/versions/").json()
    assert [(v["number"], v["n_labels"], v["is_current"], v["changelog"], v["published_by"]) for v in versions] == [
        (2, 4, True, "Spam split into phishing and promo", "policy_lead"), (1, 2, False, "Initial taxonomy", None)]
    assert versions[0]["migrations"] == V2["migrations"]
    v1 = api_as(cast["users"]["reviewer"]).get(f"{BASE}/versions/1/").json()
    assert [n["key"] for n in v1["labels"]] == ["ham", "spam"]
    assert api_as(cast["users"]["reviewer"]).get(f"{BASE}/versions/9/").status_code == 404


def test_diff_between_versions(cast: dict[str, Any], api_as: Any) -> None:
    lead = api_as(cast["users"]["policy_lead"])
    assert lead.put(f"{BASE}/draft", V2, format="json").status_code == 200
    assert lead.post(f"{BASE}/draft/publish", {"changelog": "v2"}, format="json").status_code == 201
    diff = api_as(cast["users"]["reviewer"]).get(f"{BASE}/diff?from=1&to=2").json()
    assert diff["from"] == 1 and diff["to"] == 2
    assert diff["header"] == {}
    assert diff["added"] == [{"key": "junk", "name": "Junk", "parent": None},
                             {"key": "junk/phishing", "name": "Phishing", "parent": "junk"},
                             {"key": "junk/promo", "name": "Promotion", "parent": "junk"}]
    assert diff["removed"] == [{"key": "spam", "name": "Spam", "parent": None}]
    assert diff["changed"] == []
    assert diff["migrations"] == [{**V2["migrations"][0], "from_version": 1, "to_version": 2}]
    # Edit a guideline only, publish v3, and diff 3 -> 1 (either order works).
    doc = {**V2, "migrations": []}
    doc["labels"] = [{**V2["labels"][0], "description": "Personal."}, V2["labels"][1]]
    assert lead.put(f"{BASE}/draft", doc, format="json").status_code == 200
    assert lead.post(f"{BASE}/draft/publish", {"changelog": "v3"}, format="json").status_code == 201
    diff23 = lead.get(f"{BASE}/diff?from=2&to=3").json()
    assert diff23["changed"] == [{"key": "ham", "fields": {"description": {"from": "Ordinary personal message.",
                                                                           "to": "Personal."}}}]
    assert (diff23["added"], diff23["removed"], diff23["migrations"]) == ([], [], [])
    back = lead.get(f"{BASE}/diff?from=3&to=1").json()
    assert [a["key"] for a in back["added"]] == ["spam"]
    bad = lead.get(f"{BASE}/diff?from=x&to=1")
    assert (bad.status_code, bad.json()["detail"]) == (400, "from: must be a version number")


def test_export_then_import_round_trips(cast: dict[str, Any], api_as: Any) -> None:
    lead = api_as(cast["users"]["policy_lead"])
    exported = api_as(cast["users"]["reviewer"]).get(f"{BASE}/export")
    assert exported.status_code == 200
    assert exported["Content-Disposition"] == 'attachment; filename="sms-taxonomy-v1.json"'
    document = exported.json()
    assert document == {"name": "SMS moderation", "multi_label": False, "allow_non_leaf": False, "labels": [
        {"key": "ham", "name": "Ham", "description": "Ordinary personal message.", "severity": 0, "action": "",
         "positive_examples": [], "negative_examples": [], "deprecated": False, "children": []},
        {"key": "spam", "name": "Spam", "description": "Unsolicited commercial or fraudulent message.",
         "severity": 0, "action": "", "positive_examples": [], "negative_examples": [], "deprecated": False,
         "children": []}]}
    document["labels"][0]["description"] = "Edited."
    imported = lead.post(f"{BASE}/import", document, format="json")
    assert imported.status_code == 200, imported.content
    assert imported.json()["document"]["labels"][0]["description"] == "Edited."
    # Multipart upload of a file works the same way.
    upload = io.BytesIO(json.dumps(SMS_TAXONOMY).encode())
    upload.name = "taxonomy.json"
    from_file = lead.post(f"{BASE}/import", {"file": upload}, format="multipart")
    assert from_file.status_code == 200
    assert from_file.json()["document"]["labels"][0]["description"] == "Ordinary personal message."
    assert list(AuditEvent.objects.filter(project=cast["project"], action="taxonomy.draft_save")
                .values_list("data__source", flat=True).order_by("id")) == ["import", "import"]


BAD_INPUTS = [
    ({"name": "T", "labels": [{"key": "a", "parent": "b"}, {"key": "b", "parent": "a"}]},
     "labels[0].parent: cycle a -> b -> a", "labels[0].parent"),
    ({"name": "T", "labels": [{"key": "a"}, {"key": "b", "children": [{"key": "a"}]}]},
     "labels[1].children[0].key: duplicate key 'a' (first at labels[0])", "labels[1].children[0].key"),
    ({"name": "T", "labels": [{"key": f"k{i}"} for i in range(10_000)]},
     "labels: more than 2000 labels (the limit is 2000)", "labels"),
    ({"name": "T", "labels": [{"key": "a"}, {"key": "b", "description": "x" * 1_000_000}]},
     "labels[1].description: guideline longer than 100000 characters", "labels[1].description"),
    ({"name": "T", "labels": [{"key": "a", "name": ""}]}, "labels[0].name: must be a non-empty string",
     "labels[0].name"),
]


@pytest.mark.parametrize(("document", "message", "path"), BAD_INPUTS, ids=["cycle", "duplicate", "10k", "1MB",
                                                                         "empty-name"])
@pytest.mark.parametrize("endpoint", ["import", "draft"])
def test_bad_documents_name_the_path_and_change_nothing(cast: dict[str, Any], api_as: Any, document: Any,
                                                        message: str, path: str, endpoint: str) -> None:
    lead = api_as(cast["users"]["policy_lead"])
    assert lead.put(f"{BASE}/draft", SMS_TAXONOMY, format="json").status_code == 200  # an existing draft survives
    before = snapshot(cast["project"])
    if endpoint == "import":
        response = lead.post(f"{BASE}/import", document, format="json")
    else:
        response = lead.put(f"{BASE}/draft", document, format="json")
    assert response.status_code == 400
    assert response.json() == {"detail": message, "code": "invalid", "path": path} | (
        {"cycle": ["a", "b", "a"]} if "cycle" in message else {})
    assert snapshot(cast["project"]) == before
    assert lead.post(f"{BASE}/draft/publish", {"changelog": "still the old draft"}, format="json").status_code == 201
    assert current_number(cast["project"]) == 2


def test_publish_blocked_by_problems_reports_them_all_and_publishes_nothing(cast: dict[str, Any], api_as: Any) -> None:
    lead = api_as(cast["users"]["policy_lead"])
    doc = {"name": "SMS", "labels": [{"key": "ham"}],
           "migrations": [{"kind": "rename", "sources": ["nope"], "targets": ["ham2"]}]}
    assert lead.put(f"{BASE}/draft", doc, format="json").status_code == 200
    before = snapshot(cast["project"])
    response = lead.post(f"{BASE}/draft/publish", {"changelog": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["problems"] == [
        {"path": "migrations[0].sources[0]", "message": "migrations[0].sources[0]: 'nope' is not a label of v1"},
        {"path": "migrations[0].targets[0]", "message": "migrations[0].targets[0]: 'ham2' is not a label of the draft"},
        {"path": "labels", "message": "labels: 'spam' is in v1 but not in the draft: declare a rename, merge, split "
                                      "or deprecate migration for it"},
    ]
    assert response.json()["detail"].startswith("the draft cannot be published: migrations[0].sources[0]")
    assert snapshot(cast["project"]) == before


def test_discard_draft(cast: dict[str, Any], api_as: Any) -> None:
    lead = api_as(cast["users"]["policy_lead"])
    assert lead.delete(f"{BASE}/draft").status_code == 404
    assert lead.put(f"{BASE}/draft", V2, format="json").status_code == 200
    assert lead.delete(f"{BASE}/draft").status_code == 204
    assert not TaxonomyVersion.objects.filter(project=cast["project"], status="draft").exists()
    assert not LabelMigration.objects.filter(to_version__project=cast["project"]).exists()
    assert lead.post(f"{BASE}/draft/preview").status_code == 404


EDITS = [
    ("get", "/draft", None),
    ("put", "/draft", V2),
    ("delete", "/draft", None),
    ("post", "/draft/preview", None),
    ("post", "/draft/publish", {"changelog": "sneaky"}),
    ("post", "/import", SMS_TAXONOMY),
]
READS = ["/", "/versions/", "/versions/1/", "/diff?from=1&to=2", "/export"]


@pytest.mark.parametrize("role", ["reviewer", "ml_engineer"])
def test_roles_without_edit_taxonomy_get_403_on_every_edit_and_nothing_changes(
        cast: dict[str, Any], api_as: Any, role: str) -> None:
    lead = api_as(cast["users"]["policy_lead"])
    assert lead.put(f"{BASE}/draft", V2, format="json").status_code == 200
    with_spam_answer(cast)
    before = snapshot(cast["project"])
    client = api_as(cast["users"][role])
    for method, suffix, body in EDITS:
        response = getattr(client, method)(f"{BASE}{suffix}", body, format="json")
        assert response.status_code == 403, (method, suffix)
        assert response.json()["detail"] == f"your role ({role}) may not edit taxonomy here"
    assert snapshot(cast["project"]) == before


def test_admin_may_edit(cast: dict[str, Any], api_as: Any) -> None:
    admin = api_as(cast["users"]["admin"])
    assert admin.put(f"{BASE}/draft", SMS_TAXONOMY | {"name": "Renamed"}, format="json").status_code == 200
    assert admin.post(f"{BASE}/draft/publish", {"changelog": "rename"}, format="json").status_code == 201


def test_outsiders_get_404_everywhere_and_anonymous_is_refused(cast: dict[str, Any], api_as: Any) -> None:
    before = snapshot(cast["project"])
    outsider, anonymous = api_as(cast["users"]["outsider"]), api_as(None)
    for method, suffix, body in EDITS:
        assert getattr(outsider, method)(f"{BASE}{suffix}", body, format="json").status_code == 404
        assert getattr(anonymous, method)(f"{BASE}{suffix}", body, format="json").status_code == 401
    for suffix in READS:
        assert outsider.get(f"{BASE}{suffix}").status_code == 404
        assert anonymous.get(f"{BASE}{suffix}").status_code == 401
    assert snapshot(cast["project"]) == before


def test_schema_documents_the_taxonomy_endpoints(cast: dict[str, Any], api_as: Any) -> None:
    schema = api_as(cast["users"]["reviewer"]).get("/api/schema/?format=json").json()
    paths = {p for p in schema["paths"] if "/taxonomy" in p}
    assert paths == {
        "/api/projects/{slug}/taxonomy/", "/api/projects/{slug}/taxonomy/versions/",
        "/api/projects/{slug}/taxonomy/versions/{number}/", "/api/projects/{slug}/taxonomy/diff",
        "/api/projects/{slug}/taxonomy/export", "/api/projects/{slug}/taxonomy/import",
        "/api/projects/{slug}/taxonomy/skos",
        "/api/projects/{slug}/taxonomy/draft", "/api/projects/{slug}/taxonomy/draft/preview",
        "/api/projects/{slug}/taxonomy/draft/publish",
    }
    assert set(schema["paths"]["/api/projects/{slug}/taxonomy/draft"]) == {"get", "put", "delete"}
    put = schema["paths"]["/api/projects/{slug}/taxonomy/draft"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["$ref"] == \
        "#/components/schemas/DraftWriteRequest"
    assert set(schema["components"]["schemas"]["PreviewResponse" if "PreviewResponse" in schema["components"][
        "schemas"] else "Preview"]["properties"]) >= {"annotations_mapped", "items_requeued", "migrations"}
