"""config/csp_middleware.py sets exactly the headers django-csp's own middleware sets, with the text built once."""

from __future__ import annotations

from typing import Any

import pytest
from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CSPMiddleware as Original
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from config.csp_middleware import CSPMiddleware


def _both(path: str = "/api/projects/", *, response_attrs: dict[str, Any] | None = None,
          nonce: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    out = []
    for middleware_class in (CSPMiddleware, Original):
        request = RequestFactory().get(path)
        middleware = middleware_class(lambda r: HttpResponse("ok"))
        middleware.process_request(request)
        if nonce:
            str(request.csp_nonce)  # type: ignore[attr-defined]  # a template used the nonce
            request._csp_nonce = "fixed-nonce"  # type: ignore[attr-defined]
        response = HttpResponse("ok")
        for name, value in (response_attrs or {}).items():
            setattr(response, name, value)
        middleware.process_response(request, response)
        out.append({name: response[name] for name in (HEADER, HEADER_REPORT_ONLY) if name in response})
    return out[0], out[1]


def test_the_settings_policy_is_the_same_header() -> None:
    ours, theirs = _both()
    assert ours == theirs and "frame-ancestors 'none'" in ours[HEADER]


@pytest.mark.parametrize("attrs", [{"_csp_update": {"img-src": ["https://x.test"]}}, {"_csp_exempt": True},
                                   {"_csp_replace": {"script-src": None}}])
def test_a_view_override_or_exemption_is_the_parents(attrs: dict[str, Any]) -> None:
    ours, theirs = _both(response_attrs=attrs)
    assert ours == theirs


def test_a_nonce_is_the_parents() -> None:
    ours, theirs = _both(nonce=True)
    assert ours == theirs


def test_changed_settings_rebuild_the_text() -> None:
    policy = {"DIRECTIVES": {"default-src": ["'self'"]}, "EXCLUDE_URL_PREFIXES": ["/skip/"]}
    with override_settings(CONTENT_SECURITY_POLICY=policy,
                           CONTENT_SECURITY_POLICY_REPORT_ONLY={"DIRECTIVES": {"img-src": ["'self'"]}}):
        ours, theirs = _both()
        assert ours == theirs and ours[HEADER] == "default-src 'self'" and "img-src 'self'" in ours[HEADER_REPORT_ONLY]
        skipped, skipped_theirs = _both("/skip/x")
        assert skipped == skipped_theirs and HEADER not in skipped and HEADER_REPORT_ONLY in skipped
    assert _both()[0] == _both()[1]
