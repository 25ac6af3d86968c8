"""Keyset pages for the list endpoints, with the body kept as CONTRACT.md's plain JSON list.

A page is ``limit`` rows (default 100, at most 500) after a cursor taken from the last row of the page before;
while more remain, the response carries ``Link: <...>; rel="next"`` with the next page's URL. A client that
ignores the header sees exactly the first page it always saw, and a cursor (unlike an offset) never skips or
repeats a row when rows are added between two requests.

Lists use it as: ``query = validated(NewestFirstQuerySerializer, request.query_params)``, read ``limit + 1`` rows
older than ``query.get("before")``, then ``page(rows, limit, request, cursor=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

PAGE_DEFAULT = 100
PAGE_MAX = 500
Row = TypeVar("Row")


class NewestFirstQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    """``limit`` and ``before`` (a positive key: a version number or an id) of a newest-first list."""

    limit = serializers.IntegerField(min_value=1, max_value=PAGE_MAX, default=PAGE_DEFAULT)
    before = serializers.IntegerField(min_value=1, required=False)


def newest_first_parameters(key: str) -> list[OpenApiParameter]:
    """The schema's description of ``limit`` and ``before`` for a list keyed by ``key``."""
    return [OpenApiParameter("limit", int, description=f"Page size (1-{PAGE_MAX}, default {PAGE_DEFAULT})."),
            OpenApiParameter("before", int, description=f"Only rows whose {key} is below this one (the next page; "
                                                        "see the Link header).")]


def next_link(request: Request, **params: Any) -> str:
    """The ``Link`` header value naming this path with ``params`` as its query: the next page."""
    return f'<{request.build_absolute_uri(request.path)}?{urlencode(params)}>; rel="next"'


def page(rows: Sequence[Row], limit: int, request: Request, *, body: Callable[[list[Row]], Any],
         cursor: Callable[[Row], dict[str, Any]]) -> Response:
    """A response of the first ``limit`` of ``rows`` (read as ``limit + 1``, so one more says a next page exists),
    shaped by ``body``; while more remain, a ``Link`` to the page after, whose query is ``cursor(last row)``."""
    shown = list(rows[:limit])
    response = Response(body(shown))
    if len(rows) > limit:
        response["Link"] = next_link(request, limit=limit, **cursor(shown[-1]))
    return response
