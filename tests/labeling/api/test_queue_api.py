"""The queue's HTTP API (CONTRACT.md): shapes, status codes, authorisation, and the OpenAPI schema."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db.models import F
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from labeling.api import serializers_queue
from labeling.models import Annotation, AuditEvent, Item, Lease, Project, RankingEntry, RankingRow
from labeling.services.taxonomy import taxonomy_publish_document
from labeling.services.taxonomy_io import taxonomy_parse
from tests.factories import ItemFactory, member

pytestmark = pytest.mark.django_db

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture(autouse=True)
def _no_retrain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("learning.scheduling.request_retrain", lambda *, project_id: None)
    cache.clear()


@pytest.fixture
def sms(cast: dict[str, Any]) -> Project:
    project: Project = cast["project"]
    return project


def add_item(project: Project, name: str, **fields: Any) -> Item:
    created: Item = ItemFactory(project=project, external_id=name, text=f"text of {name}", **fields)
    return created


def next_item(client: APIClient, slug: str = "sms") -> Any:
    return client.post(f"/api/projects/{slug}/queue/next")


def take(client: APIClient, slug: str = "sms") -> dict[str, Any]:
    response = next_item(client, slug)
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    return body


def submit(client: APIClient, lease_id: int, **body: Any) -> Any:
    return client.post(f"/api/leases/{lease_id}/submit", body, format="json")


# --- queue/next -------------------------------------------------------------------------------------------------


def test_next_returns_the_contract_shape(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    target = add_item(sms, "m1", meta={"lang": "en"})
    RankingEntry.objects.write_batch(project_id=sms.pk, ranking_version=4, start_rank=0, rows=[
        RankingRow(item_id=target.pk, score=0.25, reason="uncertainty", inclusion_probability=0.5,
                   suggested_label="spam", suggested_confidence=0.75)])
    RankingEntry.objects.activate(project_id=sms.pk, ranking_version=4)
    body = take(api_as(cast["users"]["reviewer"]))
    lease = Lease.objects.get()
    assert set(body) == {"lease", "item", "selection", "suggestion", "taxonomy_version", "cluster", "bank_matches",
                         "protection"}
    assert body["cluster"] is None  # not clustered yet
    assert body["bank_matches"] == []  # no bank matched it
    assert body["lease"]["id"] == lease.pk and ISO.match(body["lease"]["expires_at"])
    assert body["item"] == {"id": target.pk, "external_id": "m1", "text": "text of m1", "meta": {"lang": "en"},
                            "image": None}
    assert body["selection"] == {"reason": "uncertainty", "score": 0.25, "model_version": 4,
                                 "inclusion_probability": 0.5}
    assert body["suggestion"] == {"label": "spam", "confidence": 0.75}
    assert body["taxonomy_version"] == 1


def test_next_is_204_when_nothing_is_left(cast: dict[str, Any], api_as: Any) -> None:
    response = next_item(api_as(cast["users"]["reviewer"]))
    assert (response.status_code, response.content) == (204, b"")


def test_gold_items_look_like_any_other(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    add_item(sms, "g1", is_gold=True, gold_labels=["spam"])
    Project.objects.filter(pk=sms.pk).update(gold_rate=1.0)  # every checkout draws gold while any is unseen
    response = next_item(api_as(cast["users"]["reviewer"]))
    assert response.status_code == 200
    assert "gold" not in response.content.decode().lower()
    lease_id = response.json()["lease"]["id"]
    assert Lease.objects.get(pk=lease_id).selection_reason == "gold"
    again = take(api_as(cast["users"]["reviewer"]))
    assert again["selection"] == {"reason": "fallback_random", "score": None, "model_version": None,
                                  "inclusion_probability": None}
    done = submit(api_as(cast["users"]["reviewer"]), lease_id, labels=["ham"])
    assert done.status_code == 201 and "gold" not in done.content.decode().lower()


@pytest.mark.parametrize(("who", "status"), [("outsider", 404), ("ml_engineer", 403), ("anonymous", 401)])
def test_next_is_refused_to_non_labellers(cast: dict[str, Any], sms: Project, api_as: Any, who: str,
                                          status: int) -> None:
    add_item(sms, "m1")
    response = next_item(api_as(cast["users"][who]))
    assert response.status_code == status
    assert Lease.objects.count() == 0


def test_policy_leads_and_admins_may_label(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    add_item(sms, "m1")
    add_item(sms, "m2")
    assert next_item(api_as(cast["users"]["policy_lead"])).status_code == 200
    assert next_item(api_as(cast["users"]["admin"])).status_code == 200


# --- submit -----------------------------------------------------------------------------------------------------


def test_submit_is_201_and_a_replay_is_200_with_the_same_id(cast: dict[str, Any], sms: Project,
                                                            api_as: Any) -> None:
    target = add_item(sms, "m1")
    client = api_as(cast["users"]["reviewer"])
    lease_id = take(client)["lease"]["id"]
    first = submit(client, lease_id, labels=["spam"], idempotency_key="abc", lead_time_ms=900, comment="obvious")
    assert first.status_code == 201, first.content
    body = first.json()
    annotation = Annotation.objects.get()
    assert {k: v for k, v in body.items() if k != "undo_until"} == {
        "annotation_id": annotation.pk, "lease_id": lease_id, "item_id": target.pk, "labels": ["spam"],
        "taxonomy_version": 1, "taxonomy_changed": False, "current_taxonomy_version": 1}
    assert ISO.match(body["undo_until"])
    assert (annotation.lead_time_ms, annotation.comment) == (900, "obvious")
    replay = submit(client, lease_id, labels=["spam"], idempotency_key="abc")
    assert (replay.status_code, replay.json()["annotation_id"]) == (200, annotation.pk)
    assert Annotation.objects.count() == 1
    plain_replay = submit(client, lease_id, labels=["spam"])
    assert plain_replay.status_code == 409
    assert plain_replay.json() == {"detail": "lease already submitted", "code": "conflict",
                                   "annotation_id": annotation.pk, "state": "submitted"}


def test_unknown_label_is_400_naming_it(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    add_item(sms, "m1")
    client = api_as(cast["users"]["reviewer"])
    lease_id = take(client)["lease"]["id"]
    response = submit(client, lease_id, labels=["spma"])
    assert response.status_code == 400
    assert response.json() == {"detail": "unknown label 'spma' in taxonomy version 1; valid labels: ham, spam",
                               "code": "invalid", "field": "labels", "labels": ["spma"]}
    assert (Annotation.objects.count(), Lease.objects.get().state) == (0, "active")


@pytest.mark.parametrize(("body", "detail"), [
    ({}, "labels: This field is required."),
    ({"labels": ["ham"], "lead_time_ms": -1}, "lead_time_ms: Ensure this value is greater than or equal to 0."),
    ({"labels": ["ham"], "idempotency_key": "k" * 129},
     "idempotency_key: Ensure this field has no more than 128 characters."),
    ({"labels": "ham"}, "labels: must be a non-empty list of label keys"),
])
def test_malformed_bodies_are_400_in_the_one_error_shape(cast: dict[str, Any], sms: Project, api_as: Any,
                                                         body: dict[str, Any], detail: str) -> None:
    add_item(sms, "m1")
    client = api_as(cast["users"]["reviewer"])
    lease_id = take(client)["lease"]["id"]
    response = client.post(f"/api/leases/{lease_id}/submit", body, format="json")
    assert (response.status_code, response.json()["detail"], response.json()["code"]) == (400, detail, "invalid")
    assert Annotation.objects.count() == 0


def test_expired_lease_is_409_with_a_message(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    add_item(sms, "m1")
    client = api_as(cast["users"]["reviewer"])
    lease_id = take(client)["lease"]["id"]
    Lease.objects.filter(pk=lease_id).update(expires_at=F("created_at") - timedelta(seconds=1))
    response = submit(client, lease_id, labels=["ham"])
    assert response.status_code == 409
    assert response.json()["detail"].startswith("lease expired at ")
    assert response.json()["detail"].endswith("; take the next item")
    assert (Annotation.objects.count(), Item.objects.get().n_done) == (0, 0)


def test_lease_lookups_are_404_outside_the_project_and_403_for_another_member(
        cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    add_item(sms, "m1")
    lease_id = take(api_as(cast["users"]["reviewer"]))["lease"]["id"]
    before = (AuditEvent.objects.count(), list(Lease.objects.values_list("state", "expires_at", "renewals")))
    for action in ("submit", "skip", "renew", "undo"):
        outsider = api_as(cast["users"]["outsider"]).post(f"/api/leases/{lease_id}/{action}", {"labels": ["ham"]},
                                                          format="json")
        assert outsider.status_code == 404, action
        lead = api_as(cast["users"]["policy_lead"]).post(f"/api/leases/{lease_id}/{action}", {"labels": ["ham"]},
                                                         format="json")
        assert lead.status_code == 403, action
        assert lead.json()["detail"] == f"lease {lease_id} belongs to another reviewer"
        engineer = api_as(cast["users"]["ml_engineer"]).post(f"/api/leases/{lease_id}/{action}",
                                                             {"labels": ["ham"]}, format="json")
        assert engineer.status_code == 403, action
    assert api_as(cast["users"]["reviewer"]).post("/api/leases/999999/submit", {"labels": ["ham"]},
                                                  format="json").status_code == 404
    after = (AuditEvent.objects.count(), list(Lease.objects.values_list("state", "expires_at", "renewals")))
    assert after == before
    assert Annotation.objects.count() == 0


def test_submit_after_a_taxonomy_change_reports_it(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    add_item(sms, "m1")
    client = api_as(cast["users"]["reviewer"])
    lease_id = take(client)["lease"]["id"]
    taxonomy_publish_document(project=sms, actor=None, changelog="v2", parsed=taxonomy_parse(
        {"name": "v2", "labels": [{"key": "ham", "name": "Ham"}, {"key": "scam", "name": "Scam"}]}))
    response = submit(client, lease_id, labels=["spam"])
    assert response.status_code == 201
    body = response.json()
    assert (body["taxonomy_version"], body["taxonomy_changed"], body["current_taxonomy_version"]) == (1, True, 2)
    assert Annotation.objects.get().labels == ["spam"]


# --- skip, renew, undo ------------------------------------------------------------------------------------------


def test_skip_renew_and_undo(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    add_item(sms, "m1", random_key=0.1)
    add_item(sms, "m2", random_key=0.2)
    client = api_as(cast["users"]["reviewer"])
    first = take(client)
    assert first["item"]["external_id"] == "m1"
    renewed = client.post(f"/api/leases/{first['lease']['id']}/renew")
    assert renewed.status_code == 200
    assert set(renewed.json()) == {"lease"} and renewed.json()["lease"]["id"] == first["lease"]["id"]
    assert Lease.objects.get(pk=first["lease"]["id"]).renewals == 1
    skipped = client.post(f"/api/leases/{first['lease']['id']}/skip")
    assert (skipped.status_code, skipped.json()["state"], skipped.json()["lease"]["id"]) == (
        200, "skipped", first["lease"]["id"])
    assert client.post(f"/api/leases/{first['lease']['id']}/skip").status_code == 409
    assert client.post(f"/api/leases/{first['lease']['id']}/renew").status_code == 409
    second = take(client)
    assert second["item"]["external_id"] == "m2"
    assert submit(client, second["lease"]["id"], labels=["ham"]).status_code == 201
    assert next_item(client).status_code == 204
    undone = client.post(f"/api/leases/{second['lease']['id']}/undo")
    assert undone.status_code == 200
    body = undone.json()
    assert set(body) == set(second)
    assert (body["lease"]["id"], body["item"], body["selection"], body["taxonomy_version"]) == (
        second["lease"]["id"], second["item"], second["selection"], 1)
    assert Annotation.objects.count() == 0
    assert take(client)["lease"]["id"] == second["lease"]["id"]


def test_undo_after_the_window_is_409(cast: dict[str, Any], sms: Project, api_as: Any, settings: Any) -> None:
    settings.SIFT_UNDO_SECONDS = 0
    add_item(sms, "m1")
    client = api_as(cast["users"]["reviewer"])
    lease_id = take(client)["lease"]["id"]
    submit(client, lease_id, labels=["ham"])
    Annotation.objects.update(created_at=F("created_at") - timedelta(seconds=1))
    response = client.post(f"/api/leases/{lease_id}/undo")
    assert response.status_code == 409
    assert response.json()["detail"].startswith("the 0 s undo window closed at ")
    assert Annotation.objects.count() == 1


# --- the browser's way in: session + CSRF ---------------------------------------------------------------------


def test_session_clients_need_the_csrf_token(cast: dict[str, Any], sms: Project) -> None:
    add_item(sms, "m1")
    browser = APIClient(enforce_csrf_checks=True)
    browser.get("/login/")  # the login page sets the CSRF cookie, as it does for the real browser
    token = browser.cookies["csrftoken"].value
    browser.force_login(cast["users"]["reviewer"])
    assert browser.post("/api/projects/sms/queue/next").status_code == 403
    assert Lease.objects.count() == 0
    response = browser.post("/api/projects/sms/queue/next", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200


# --- progress ---------------------------------------------------------------------------------------------------


def test_progress_counts(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    for i in range(4):
        add_item(sms, f"m{i}", random_key=i / 10)
    Item.objects.filter(external_id="m3").update(n_done=1)
    client = api_as(cast["users"]["reviewer"])
    for _ in range(2):
        submit(client, take(client)["lease"]["id"], labels=["ham"])
    other = member(sms, username="second-reviewer", role="reviewer")
    submit(api_as(other), take(api_as(other))["lease"]["id"], labels=["spam"])
    Annotation.objects.filter(reviewer=cast["users"]["reviewer"], item__external_id="m0").update(
        created_at=F("created_at") - timedelta(days=2))
    response = client.get("/api/projects/sms/progress")
    assert response.status_code == 200
    assert response.json() == {"total": 4, "finished": 4, "open": 0, "mine_today": 1, "mine_total": 2}
    assert api_as(cast["users"]["outsider"]).get("/api/projects/sms/progress").status_code == 404
    assert api_as(cast["users"]["ml_engineer"]).get("/api/projects/sms/progress").json()["mine_total"] == 0


# --- schema -----------------------------------------------------------------------------------------------------


def test_schema_documents_every_queue_endpoint_and_is_valid() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    validate_schema(schema)  # type: ignore[no-untyped-call]
    paths = schema["paths"]
    # (other areas may add project-wide responses such as 401; these are the queue's own)
    assert set(paths["/api/projects/{slug}/queue/next"]["post"]["responses"]) >= {"200", "204", "403", "404", "409"}
    submit_op = paths["/api/leases/{lease_id}/submit"]["post"]
    assert set(submit_op["responses"]) >= {"200", "201", "400", "403", "404", "409"}
    assert "requestBody" in submit_op
    for action in ("skip", "renew", "undo"):
        assert "200" in paths[f"/api/leases/{{lease_id}}/{action}"]["post"]["responses"]
    assert "200" in paths["/api/projects/{slug}/progress"]["get"]["responses"]
    components = schema["components"]["schemas"]
    assert set(components["QueueNextResponse"]["properties"]) == {
        "lease", "item", "selection", "suggestion", "taxonomy_version", "cluster", "bank_matches", "protection"}


def test_payload_builders_match_their_documented_serializers(cast: dict[str, Any], sms: Project,
                                                             api_as: Any) -> None:
    add_item(sms, "m1")
    client = api_as(cast["users"]["reviewer"])
    body = take(client)
    assert set(body) == set(serializers_queue.QueueNextResponseSerializer().fields)
    # "masked" appears only where the project masks PII (tests/labeling/services/test_privacy_masking.py).
    assert set(body["item"]) == set(serializers_queue.QueueItemSerializer().fields) - {"masked"}
    assert set(body["selection"]) == set(serializers_queue.SelectionSerializer().fields)
    assert set(body["lease"]) == set(serializers_queue.LeaseRefSerializer().fields)
    done = submit(client, body["lease"]["id"], labels=["ham"]).json()
    # "next" appears only when the submit asks for it (test_submit_with_next_returns_the_next_item).
    assert set(done) == set(serializers_queue.SubmitResponseSerializer().fields) - {"next"}


def test_submit_with_next_returns_the_next_item(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    """One round trip for the labelling page: the submit's answer carries the next lease, as queue/next gives it."""
    first, second = add_item(sms, "m1"), add_item(sms, "m2")
    client = api_as(cast["users"]["reviewer"])
    body = take(client)
    key = "k-next-1"
    response = submit(client, body["lease"]["id"], labels=["ham"], idempotency_key=key, next=True)
    assert response.status_code == 201
    done = response.json()
    assert set(done) == set(serializers_queue.SubmitResponseSerializer().fields)
    nxt = done["next"]
    assert set(nxt) == set(serializers_queue.QueueNextResponseSerializer().fields)
    held = Lease.objects.get(state="active")
    other = second if body["item"]["id"] == first.pk else first
    assert (nxt["lease"]["id"], nxt["item"]["id"], nxt["item"]["external_id"]) == (held.pk, other.pk,
                                                                                  other.external_id)
    assert nxt["taxonomy_version"] == 1 and held.reviewer_id == cast["users"]["reviewer"].pk
    # A replay answers 200 with the same annotation and the lease now held: no second lease is taken.
    again = submit(client, body["lease"]["id"], labels=["ham"], idempotency_key=key, next=True)
    assert again.status_code == 200
    assert again.json()["annotation_id"] == done["annotation_id"] and again.json()["next"] == nxt
    assert Lease.objects.filter(state="active").count() == 1 and Annotation.objects.count() == 1
    # The last item: the submit is stored and `next` is null (queue/next then says 204).
    last = submit(client, nxt["lease"]["id"], labels=["spam"], next=True)
    assert last.status_code == 201 and last.json()["next"] is None
    assert Annotation.objects.count() == 2 and not Lease.objects.filter(state="active").exists()
    assert next_item(client).status_code == 204


def test_a_failing_next_checkout_never_turns_a_committed_submit_into_an_error(
        cast: dict[str, Any], sms: Project, api_as: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadlock or lock timeout in the chained checkout: the submit stands (201, next null), not a 500."""
    from django.db import OperationalError

    add_item(sms, "m1"), add_item(sms, "m2")
    client = api_as(cast["users"]["reviewer"])
    body = take(client)

    def deadlocked(**kwargs: Any) -> None:
        raise OperationalError("deadlock detected")

    monkeypatch.setattr("labeling.api.views_queue.queue_checkout_next", deadlocked)
    response = submit(client, body["lease"]["id"], labels=["ham"], idempotency_key="k-dead", next=True)
    assert (response.status_code, response.json()["next"]) == (201, None)
    stored = Annotation.objects.get()
    assert (stored.pk, stored.labels, stored.lease_id) == (response.json()["annotation_id"], ["ham"],
                                                            body["lease"]["id"])


def test_submit_without_next_leases_nothing(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    add_item(sms, "m1"), add_item(sms, "m2")
    client = api_as(cast["users"]["reviewer"])
    body = take(client)
    done = submit(client, body["lease"]["id"], labels=["ham"], next=False).json()
    assert "next" not in done
    assert not Lease.objects.filter(state="active").exists()


def test_queue_views_apply_the_token_rules(cast: dict[str, Any], sms: Project) -> None:
    """The queue's own token look-up (labeling/api/authentication.py) refuses what DRF's would, with its words."""
    from rest_framework.authtoken.models import Token

    add_item(sms, "m1")
    reviewer = cast["users"]["reviewer"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-key")
    refused = next_item(client)
    assert (refused.status_code, refused.json()["detail"]) == (401, "Invalid token.")
    token = Token.objects.create(user=reviewer)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert next_item(client).status_code == 200
    Lease.objects.all().delete()
    type(reviewer).objects.filter(pk=reviewer.pk).update(is_active=False)
    inactive = next_item(client)
    assert (inactive.status_code, inactive.json()["detail"]) == (401, "User inactive or deleted.")
    assert not Lease.objects.exists()


def test_empty_queue_says_whether_to_come_back(cast: dict[str, Any], sms: Project, api_as: Any) -> None:
    """204 + Retry-After while the only open item is held by someone else; plain 204 once nothing can come back."""
    add_item(sms, "only")
    holder, other = api_as(cast["users"]["reviewer"]), api_as(cast["users"]["policy_lead"])
    held = take(holder)
    waiting = next_item(other)
    assert waiting.status_code == 204
    assert 1 <= int(waiting["Retry-After"]) <= 10
    assert holder.post(f"/api/leases/{held['lease']['id']}/skip").status_code == 200
    taken = take(other)
    assert taken["item"]["external_id"] == "only"
    assert submit(other, taken["lease"]["id"], labels=["ham"]).status_code == 201
    done = next_item(holder)
    assert done.status_code == 204
    assert "Retry-After" not in done


@pytest.mark.django_db(transaction=True)
def test_an_item_only_row_locked_for_a_moment_is_204_with_retry_after(postgres_only: None, cast: dict[str, Any],
                                                                      api_as: Any) -> None:
    """Another transaction has the only open item's row locked (a checkout scanning past it, a submit, an import):
    the checkout's SKIP LOCKED scan cannot see it, but it is not done, so the page must ask again, not stop."""
    import threading

    from django.db import connection, transaction

    sms: Project = cast["project"]
    item = add_item(sms, "only")
    locked, release = threading.Event(), threading.Event()

    def hold_row_lock() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT id FROM labeling_item WHERE id = %s FOR NO KEY UPDATE", [item.pk])
                locked.set()
                assert release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_row_lock)
    holder.start()
    try:
        assert locked.wait(30)
        client = api_as(cast["users"]["reviewer"])
        waiting = next_item(client)
        assert (waiting.status_code, waiting["Retry-After"]) == (204, "1")
    finally:
        release.set()
        holder.join(30)
    assert take(client)["item"]["external_id"] == "only"
