"""Reviewer languages in the queue (labeling/services/reviewer_languages.py): exact outcomes of the modes, the
statements of mode "off" unchanged byte for byte, concurrent filtered checkouts, and the setting service."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from labeling.models import AuditEvent, Item, Lease, Membership, Project
from labeling.services import queues
from labeling.services.errors import NotFound, ValidationFailed
from labeling.services.queues import queue_checkout_next, queue_retry_after, render_sql
from labeling.services.reviewer_languages import language_passes, languages_clean, membership_set_languages
from tests.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db


def make(mode: str, overlap: int = 1) -> Project:
    project = ProjectFactory(overlap=overlap)
    Project.objects.filter(pk=project.pk).update(language_mode=mode)
    project.refresh_from_db()
    return project


def items(project: Project, language: str | None, n: int) -> list[Item]:
    return [ItemFactory(project=project, external_id=f"{language}-{k}", language=language) for k in range(n)]


def reviewer(project: Project, name: str, languages: list[str]) -> Any:
    user = member(project, username=name, role="reviewer")
    Membership.objects.filter(project=project, user=user).update(languages=languages)
    return user


def drain(project: Project, user: Any) -> list[str | None]:
    """Check out and close leases until the queue answers nothing; the languages served, in order."""
    served = []
    while (lease := queue_checkout_next(project=project, reviewer=user)) is not None:
        served.append(Item.objects.get(pk=lease.item_id).language)
        Lease.objects.filter(pk=lease.pk).update(state=Lease.State.SKIPPED)
    return served


def test_only_a_hindi_reviewer_never_gets_arabic_and_gets_nothing_when_only_arabic_is_left() -> None:
    project = make("only")
    items(project, "hi", 3)
    items(project, "ar", 4)
    hindi = reviewer(project, "hindi", ["hi"])
    assert drain(project, hindi) == ["hi", "hi", "hi"]
    assert queue_checkout_next(project=project, reviewer=hindi) is None
    # Four Arabic items are open, but none can come back to this reviewer: done here, not "ask again".
    assert queue_retry_after(project=project, reviewer=hindi) is None
    arabic = reviewer(project, "arabic", ["ar"])
    assert drain(project, arabic) == ["ar"] * 4


def test_only_the_retry_after_counts_the_reviewers_languages_held_by_others() -> None:
    project = make("only")
    items(project, "hi", 1)
    items(project, "ar", 1)
    first, second = reviewer(project, "hi1", ["hi"]), reviewer(project, "hi2", ["hi"])
    assert queue_checkout_next(project=project, reviewer=first) is not None
    assert queue_checkout_next(project=project, reviewer=second) is None
    # The Hindi item is held by someone else and may come back; the open Arabic item does not count.
    assert 1 <= (queue_retry_after(project=project, reviewer=second) or 0) <= 10


def test_prefer_serves_the_reviewers_languages_first_then_the_others() -> None:
    project = make("prefer")
    items(project, "ar", 3)
    items(project, "hi", 2)
    hindi = reviewer(project, "hindi", ["hi"])
    assert drain(project, hindi) == ["hi", "hi", "ar", "ar", "ar"]


@pytest.mark.parametrize("mode", ["only", "prefer"])
def test_undetermined_and_undetected_items_go_to_everyone(mode: str) -> None:
    project = make(mode)
    items(project, "", 1)
    items(project, None, 1)
    items(project, "ar", 1)
    hindi = reviewer(project, "hindi", ["hi"])
    served = drain(project, hindi)
    assert sorted(served[:2], key=str) == sorted(["", None], key=str)
    assert served[2:] == (["ar"] if mode == "prefer" else [])


def test_the_ranked_walk_and_gold_are_filtered_too() -> None:
    from labeling.models import RankingEntry, RankingRow
    project = make("only")
    arabic, hindi_items = items(project, "ar", 3), items(project, "hi", 2)
    gold = ItemFactory(project=project, external_id="gold-ar", language="ar", is_gold=True)
    Project.objects.filter(pk=project.pk).update(gold_rate=0.5)
    RankingEntry.objects.write_batch(project_id=project.pk, ranking_version=1, start_rank=0, rows=[
        RankingRow(item_id=it.pk, score=0.5, reason="uncertainty", inclusion_probability=1.0, suggested_label="",
                   suggested_confidence=None) for it in [*arabic, *hindi_items]])
    Project.objects.filter(pk=project.pk).update(active_ranking_version=1)
    project.refresh_from_db()
    hindi = reviewer(project, "hindi", ["hi"])
    leases = []
    while (lease := queue_checkout_next(project=project, reviewer=hindi)) is not None:
        leases.append(lease)
        Lease.objects.filter(pk=lease.pk).update(state=Lease.State.SKIPPED)
    assert [lease.item_id for lease in leases] == [it.pk for it in hindi_items]
    assert all(lease.model_version == 1 for lease in leases)
    assert gold.pk not in [lease.item_id for lease in leases]


def test_a_reviewer_without_languages_and_mode_off_see_everything() -> None:
    project = make("only")
    items(project, "ar", 1)
    items(project, "hi", 1)
    assert sorted(map(str, drain(project, reviewer(project, "all", [])))) == ["ar", "hi"]
    off = make("off")
    items(off, "ar", 1)
    assert drain(off, reviewer(off, "hindi-off", ["hi"])) == ["ar"]


def test_the_fallback_inclusion_probability_counts_the_reviewers_open_languages() -> None:
    project = make("only")
    items(project, "hi", 2)
    items(project, "ar", 5)
    lease = queue_checkout_next(project=project, reviewer=reviewer(project, "hindi", ["hi"]))
    assert lease is not None and lease.inclusion_probability == pytest.approx(1 / 2)


def test_language_passes() -> None:
    assert language_passes(mode="off", languages=["hi"]) == [None]
    assert language_passes(mode="only", languages=[]) == [None]
    assert language_passes(mode="only", languages=["ur", "hi"]) == [("hi", "ur", "")]
    assert language_passes(mode="prefer", languages=["hi"]) == [("hi", ""), None]


# The statements of a checkout and its empty path, rendered for PostgreSQL, as they were before reviewer languages
# existed (sha256, first 16 hex digits; with no rejected candidates and with one). Mode "off" must send exactly
# these. A deliberate change to one of them updates its line here.
BEFORE = {
    ("BOOST_SCAN_SQL", 0): "b9158ed4729db163", ("BOOST_SCAN_SQL", 1): "3b283f12ccae036f",
    ("RANKING_SCAN_SQL", 0): "a03ddbb8d39861c9", ("RANKING_SCAN_SQL", 1): "ea1eb5bf5427a8c1",
    ("FALLBACK_SCAN_SQL", 0): "05d724c532939d48", ("FALLBACK_SCAN_SQL", 1): "4daae17ea64fe638",
    ("FIRST_OPEN_RANK_SQL", 0): "17a82d24019eb3ea", ("CLAIM_SQL", 0): "a89ee035037ad34c",
    ("MEMBERSHIP_LOCK_SQL", 0): "3a567a7094116dec", ("PLANNER_SETTINGS_SQL", 0): "0ab85f03fed22efa",
    ("HELD_AND_BOOSTED_SQL", 0): "777fd7d7054ab474", ("AVAILABLE_NOW_SQL", 0): "60c88a7f3e929f72",
    ("EARLIEST_HELD_ELSEWHERE_SQL", 0): "8ed2a020d3c4160d",
}


@pytest.mark.postgres
def test_mode_off_sends_todays_statements_byte_for_byte(postgres_only: None) -> None:
    for (name, rejected), digest in BEFORE.items():
        sql, _ = render_sql(getattr(queues, name), rejected=[5] * rejected)
        assert hashlib.sha256(sql.encode()).hexdigest()[:16] == digest, name
    project = make("off")
    items(project, "ar", 2)
    user = reviewer(project, "hindi", ["hi"])
    with CaptureQueriesContext(connection) as queries:
        assert queue_checkout_next(project=project, reviewer=user) is not None
    assert not any("language" in query["sql"] for query in queries.captured_queries)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_filtered_checkouts_never_double_hold(postgres_only: None) -> None:
    """Twelve Hindi reviewers check out at once (own connections, released together) from 8 Hindi and 8 Arabic
    items, overlap 1, asking again on a Retry-After: eight get distinct Hindi items, four are told the rest are held,
    nobody gets Arabic."""
    project = make("only")
    items(project, "hi", 8)
    items(project, "ar", 8)
    users = [reviewer(project, f"hi{k}", ["hi"]) for k in range(12)]
    barrier = threading.Barrier(len(users))
    got: dict[str, int | None] = {}
    errors: list[BaseException] = []

    def run(user: Any) -> None:
        try:
            barrier.wait()
            # Asks again while the answer is "an item is only row-locked for a moment" (Retry-After 1: the others'
            # scans lock candidates); stops on "held by someone else" (their leases run 10 minutes).
            while (lease := queue_checkout_next(project=project, reviewer=user)) is None:
                if queue_retry_after(project=project, reviewer=user) != 1:
                    break
            got[user.username] = None if lease is None else lease.item_id
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    served = [item_id for item_id in got.values() if item_id is not None]
    assert len(got) == 12 and len(served) == 8 and len(set(served)) == 8
    assert set(Item.objects.filter(pk__in=served).values_list("language", flat=True)) == {"hi"}
    assert Lease.objects.filter(project=project, state=Lease.State.ACTIVE).count() == 8


def test_membership_set_languages_cleans_audits_and_refuses_bad_input() -> None:
    project = make("only")
    user = reviewer(project, "hindi", [])
    membership = membership_set_languages(actor=None, project=project, username="hindi", languages="HI, ur hi")
    assert membership.languages == ["hi", "ur"]
    event = AuditEvent.objects.filter(action="membership.languages").get()
    assert event.data == {"username": "hindi", "before": [], "after": ["hi", "ur"]}
    for bad in (["hindi"], [1], "h1"):
        with pytest.raises(ValidationFailed):
            membership_set_languages(actor=None, project=project, username="hindi", languages=bad)
    with pytest.raises(NotFound):
        membership_set_languages(actor=None, project=project, username="nobody", languages=["hi"])
    assert Membership.objects.get(project=project, user=user).languages == ["hi", "ur"]
    assert AuditEvent.objects.filter(action="membership.languages").count() == 1
    assert languages_clean([]) == []


def test_the_mode_is_a_project_setting_checked_and_audited() -> None:
    from labeling.services.projects import project_settings_update
    project = make("off")
    assert project_settings_update(actor=None, project=project, changes={"language_mode": "only"}) == ["language_mode"]
    assert Project.objects.get(pk=project.pk).language_mode == "only"
    with pytest.raises(ValidationFailed):
        project_settings_update(actor=None, project=project, changes={"language_mode": "sometimes"})
    assert Project.objects.get(pk=project.pk).language_mode == "only"


def test_the_member_endpoint_sets_languages_for_leads_and_refuses_reviewers() -> None:
    from rest_framework.test import APIClient
    project = make("only")
    target = reviewer(project, "hindi", [])
    lead = member(project, username="lead", role="policy_lead")
    client = APIClient()
    client.force_authenticate(lead)
    url = f"/api/projects/{project.slug}/members/hindi"
    response = client.patch(url, {"languages": ["hi", "ur"]}, format="json")
    assert (response.status_code, response.json()) == (200, {"username": "hindi", "role": "reviewer",
                                                              "languages": ["hi", "ur"]})
    bad = client.patch(url, {"languages": ["hindi"]}, format="json")
    assert bad.status_code == 400 and "hindi" in str(bad.json())
    assert client.patch(f"/api/projects/{project.slug}/members/nobody", {"languages": []},
                        format="json").status_code == 404
    client.force_authenticate(target)
    assert client.patch(url, {"languages": []}, format="json").status_code == 403
    assert Membership.objects.get(project=project, user=target).languages == ["hi", "ur"]
