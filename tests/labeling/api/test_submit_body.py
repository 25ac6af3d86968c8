"""The submit body's direct check (labeling/api/serializers_queue.py, ``submit_body``) gives exactly what DRF's
``SubmitRequestSerializer`` gives: the same validated fields for every body it accepts, and the serializer's own
400 (same message, same field) for every body it hands on."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import QueryDict

from labeling.api.errors import validated
from labeling.api.serializers_queue import SubmitRequestSerializer, _fast_submit_body, submit_body
from labeling.services.errors import ValidationFailed

BODIES: list[Any] = [
    {"labels": ["spam"]},
    {"labels": ["spam"], "idempotency_key": "k-1", "lead_time_ms": 1500, "next": True},
    {"labels": ["a", "a", "b"], "idempotency_key": None, "lead_time_ms": None, "comment": "", "next": False},
    {"labels": "spam"}, {"labels": []}, {"labels": [1, None]}, {"labels": {"x": 1}}, {"labels": False},
    {"labels": ["spam"], "comment": "line one\nline two\t\u00e9\u4e2d"}, {"labels": ["spam"], "comment": "x" * 10_000},
    {"labels": ["spam"], "comment": "x" * 10_001}, {"labels": ["spam"], "comment": "nul \x00"},
    {"labels": ["spam"], "comment": "lone \ud800"}, {"labels": ["spam"], "comment": None},
    {"labels": ["spam"], "comment": 5}, {"labels": ["spam"], "comment": "  padded  "},
    {"labels": ["spam"], "idempotency_key": "k" * 128}, {"labels": ["spam"], "idempotency_key": "k" * 129},
    {"labels": ["spam"], "idempotency_key": ""}, {"labels": ["spam"], "idempotency_key": "   "},
    {"labels": ["spam"], "idempotency_key": " k "}, {"labels": ["spam"], "idempotency_key": "k\x00"},
    {"labels": ["spam"], "idempotency_key": "cl\u00e9"}, {"labels": ["spam"], "idempotency_key": 12},
    {"labels": ["spam"], "idempotency_key": True}, {"labels": ["spam"], "idempotency_key": "a b"},
    {"labels": ["spam"], "lead_time_ms": 0}, {"labels": ["spam"], "lead_time_ms": -1},
    {"labels": ["spam"], "lead_time_ms": 2_147_483_647}, {"labels": ["spam"], "lead_time_ms": 2_147_483_648},
    {"labels": ["spam"], "lead_time_ms": 1.0}, {"labels": ["spam"], "lead_time_ms": 1.5},
    {"labels": ["spam"], "lead_time_ms": "15"}, {"labels": ["spam"], "lead_time_ms": True},
    {"labels": ["spam"], "next": "true"}, {"labels": ["spam"], "next": 1}, {"labels": ["spam"], "next": None},
    {"labels": ["spam"], "unknown": 1}, {"labels": None}, {}, {"idempotency_key": "k"}, [], ["spam"], "spam", None,
]


def _drf(body: Any) -> tuple[str, Any]:
    try:
        return "ok", validated(SubmitRequestSerializer, body)
    except ValidationFailed as exc:
        return "400", (str(exc), exc.extra)


def _ours(body: Any) -> tuple[str, Any]:
    try:
        return "ok", submit_body(body)
    except ValidationFailed as exc:
        return "400", (str(exc), exc.extra)


@pytest.mark.parametrize("body", BODIES, ids=[repr(b)[:60] for b in BODIES])
def test_submit_body_matches_the_serializer(body: Any) -> None:
    assert _ours(body) == _drf(body)


def test_the_direct_check_takes_the_labelling_pages_bodies() -> None:
    # The page's two shapes go the direct way (otherwise the check would save nothing).
    assert _fast_submit_body({"labels": ["spam"], "idempotency_key": "3f2a", "lead_time_ms": 1500,
                              "comment": "", "next": True}) is not None
    assert _fast_submit_body({"labels": ["spam"]}) == {"labels": ["spam"], "comment": "", "next": False}
    # And a form body is the serializer's.
    assert _fast_submit_body(QueryDict("labels=spam")) is None
