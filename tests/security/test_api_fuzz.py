"""Schemathesis fuzzes every operation of ``/api/schema/`` as a member of each role of a seeded project.

For each role, every operation the schema lists gets up to MAX_EXAMPLES cases, valid and invalid ones
(schemathesis' positive and negative generation), sent through the WSGI app inside the test's transaction (so
they see the seeded rows). Every answer must pass: no 5xx, a status code the schema documents, the documented
content type, a body that conforms to the documented schema, and nothing of the other project in it.

The project also holds the items that once broke the server (``add_hostile_items``: meta nested 980 levels
deep, a 1M-character text with masking on), and item ids are steered onto them too.

Path parameters are steered onto real rows (the project ``sms``, its taxonomy versions, leases held by the caller
and by someone else, adjudications, snapshots, and sometimes the other project's) so the cases reach the code
behind the lookup instead of stopping at a 404. Runs are derandomised (a fixed seed): a failure reproduces.

Operations are driven through schemathesis' Python API (``operation.as_strategy()`` under hypothesis' ``@given``)
rather than ``schemathesis.pytest.from_fixture``: its lazy pytest plugin writes ``Function._nodeid``, which
pytest 9.2 no longer has. Failures are collected per operation instead of stopping the run, so one report
lists them all.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import Any

import pytest
import schemathesis
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from labeling.models import Item
from tests.security.support import ROLES, World, add_hostile_items, seed_world

pytestmark = [pytest.mark.slow]

# Cases per operation and role: 4 roles x 38 operations x 8 is ~1,200 requests, about two minutes on a busy
# 2-core box. SIFT_FUZZ_EXAMPLES raises it for a deeper run.
MAX_EXAMPLES = int(os.environ.get("SIFT_FUZZ_EXAMPLES", "8"))
SEED = 20_240_917

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class InTransactionWSGIApp:
    """Django's WSGI handler, minus the per-request connection recycling.

    ``close_old_connections`` would close the test's connection (it is not in autocommit inside the test
    transaction) and lose the seeded rows; each request runs in a savepoint so that a request that broke the
    transaction (a 5xx) does not poison the cases after it.
    """

    def __init__(self) -> None:
        self.handler = WSGIHandler()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        savepoint = transaction.savepoint()
        status: list[int] = []

        def recording_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(int(status_line.split()[0]))
            return start_response(status_line, headers, exc_info)

        try:
            result = self.handler(environ, recording_start_response)
            try:
                body = list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        finally:
            if status and status[0] >= 500:
                transaction.savepoint_rollback(savepoint)
            else:
                transaction.savepoint_commit(savepoint)
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        return body


_SLUG = re.compile(r"[-a-zA-Z0-9_]+")


def _pick(options: list[Any], generated: Any) -> Any:
    """A deterministic choice among ``options`` driven by the generated value (so shrinking still works)."""
    digest = hashlib.sha256(repr(generated).encode()).digest()
    return options[digest[0] % len(options)]


def _routable(value: Any, kind: str) -> list[Any]:
    """``[value]`` if the URL converter (slug or int) would route it, else nothing.

    An unroutable value never reaches the operation: Django's resolver answers 404 before any API code runs.
    """
    if kind == "slug":
        return [value] if isinstance(value, str) and _SLUG.fullmatch(value) else []
    return [value] if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else []


def steer(case: Any, world: World, role: str) -> None:
    """Point path parameters at real rows, and sometimes make bodies valid enough to reach the services."""
    path = case.path_parameters or {}
    if "slug" in path:
        # Mostly the seeded project; sometimes the other project (404) or a generated slug.
        path["slug"] = _pick(["sms"] * 6 + ["other", *_routable(path["slug"], "slug")], path["slug"])
    if "lease_id" in path:
        own = world.active_leases.get(role)
        candidates = [own, own, world.submitted_leases.get(role), world.active_leases["reviewer2"],
                      world.other_lease, *_routable(path["lease_id"], "int")]
        path["lease_id"] = _pick([lease for lease in candidates if lease is not None], path["lease_id"])
    if "adjudication_id" in path:
        path["adjudication_id"] = _pick([world.adjudication_pending, world.adjudication_decided,
                                         world.other_adjudication, *_routable(path["adjudication_id"], "int")],
                                        path["adjudication_id"])
    if "number" in path:
        path["number"] = _pick([1, 2, *_routable(path["number"], "int")], path["number"])
    if "item_id" in path:
        items = [Item.objects.filter(project=project).order_by("id").values_list("id", flat=True).first()
                 for project in (world.project, world.project, world.other)] + world.hostile_items
        path["item_id"] = _pick([*items, *_routable(path["item_id"], "int")], path["item_id"])
    if "job_id" in path:  # import jobs: none seeded, so a routable id answers 404 (json), never the resolver's html
        path["job_id"] = _pick([1, *_routable(path["job_id"], "int")], path["job_id"])
    for banked in ("bank_id", "entry_id"):  # banks: none seeded, so a routable id answers 404 (json), never html
        if banked in path:
            path[banked] = _pick([1, *_routable(path[banked], "int")], path[banked])
    if "name" in path:
        path["name"] = _pick([world.snapshot, world.other_snapshot, *_routable(path["name"], "slug")], path["name"])
    if case.operation.path.endswith("/submit") and isinstance(case.body, dict):
        case.body["labels"] = _pick([["spam"], ["threat"], case.body.get("labels")], case.body)
    if case.operation.path.endswith("/decide") and isinstance(case.body, dict):
        case.body["labels"] = _pick([["spam"], ["ham"], case.body.get("labels")], case.body)


@pytest.fixture
def world(db: Any, settings: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> World:
    from config.celery import app

    settings.EXPORT_ROOT = tmp_path / "exports"
    # Retrain requests are captured, never published to a broker.
    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: None)
    # The token endpoint's throttle counts live in the cache; start every role from zero.
    cache.clear()
    # A live worker heartbeat, so /api/health/ answers 200 (a 503 there means "no worker", which is not a bug).
    from learning.jobs import worker_heartbeat

    worker_heartbeat(worker="fuzz@test")
    world = seed_world()
    # Issue 16: deep meta and a huge masked text in the fuzzed project, so the next such crash is found here.
    add_hostile_items(world)
    return world


def _load_schema() -> Any:
    config = schemathesis.Config.from_dict({"seed": SEED, "generation": {"deterministic": True, "database": "none"}})
    return schemathesis.openapi.from_wsgi("/api/schema/", InTransactionWSGIApp(), config=config)


def _strategy(operation: Any) -> Any:
    # Valid requests (deep paths) and invalid ones (bad types, missing fields: must be a 4xx, never a 5xx).
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))


# Schema gaps in areas still being written, reported to the lead (docs: the security report). A gap only
# tolerates the named schema-conformance checks on that operation; a 5xx or a leak is never tolerated. When an
# area fixes its schema, delete its line: the test then holds that operation to the full standard.
KNOWN_GAPS: dict[str, set[str]] = {}


def fuzz_operation(operation: Any, *, world: World, role: str, token: str, failures: list[str],
                   known: list[str]) -> int:
    """Run up to MAX_EXAMPLES cases of ``operation``; record (not raise) failures so every operation runs."""
    seen: list[int] = []
    recorded: set[str] = set()
    tolerated = KNOWN_GAPS.get(operation.label, set())

    @hypothesis_settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=_strategy(operation))
    def run(case: Any) -> None:
        steer(case, world, role)
        seen.append(1)
        try:
            response = case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)
        except FailureGroup as exc:
            titles = {failure.title for failure in exc.exceptions}
            title = f"{role} {operation.label}: " + "; ".join(sorted(titles))
            if title not in recorded:
                recorded.add(title)
                (known if titles <= tolerated else failures).append(f"{title}\n{exc}")
            return
        # Nothing of the other project ever reaches a member of sms, in any answer (errors included).
        if "other-secret" in response.content.decode("utf-8", "replace"):
            failures.append(f"{role} {operation.label}: leaked another project's data: {response.content[:300]!r}")

    run()
    return len(seen)


@pytest.mark.parametrize("role", ROLES)
def test_every_operation_conforms_for_every_role(world: World, role: str) -> None:
    token = Token.objects.get_or_create(user=world.users[role])[0].key
    schema = _load_schema()
    failures: list[str] = []
    known: list[str] = []
    counts: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        started = time.monotonic()
        counts[operation.label] = fuzz_operation(operation, world=world, role=role, token=token, failures=failures,
                                                 known=known)
        print(f"{operation.label}: {counts[operation.label]} cases in {time.monotonic() - started:.1f} s")
    # Every operation of the schema ran (a strategy that generated nothing would guard nothing).
    assert len(counts) >= 38, sorted(counts)
    assert min(counts.values()) >= 1, counts
    assert failures == [], f"{len(failures)} failure(s):\n\n" + "\n\n".join(failures)
    if known:
        summary = " | ".join(entry.split("\n")[0] for entry in known)
        pytest.xfail(f"{len(known)} known schema gap(s), see KNOWN_GAPS: {summary}")
