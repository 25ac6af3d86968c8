"""django-csp's middleware with the policy text built once, not on every response.

``csp.middleware.CSPMiddleware`` turns the settings' policy into header text on every response (a dataclass copy
and a string build: about a third of a millisecond of CPU per request here, on the queue's two requests per
labelled item: bench/queue_cost.py). That text only changes when a view overrides the policy (the
``csp_update``/``csp_replace``/``csp`` decorators set ``response._csp_*``) or a template used the request's nonce.
For every other response this subclass sets the same header from text built once per process, under the same
conditions as the parent (no header set yet, not exempt, not under an excluded prefix); the rest go to the parent
unchanged. tests/config/test_csp_middleware.py compares both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject
from csp.middleware import CSPMiddleware as _CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

_OVERRIDES = ("_csp_config", "_csp_update", "_csp_replace", "_csp_config_ro", "_csp_update_ro", "_csp_replace_ro")
_PASS_THROUGH_CODES = (404, 500)  # the parent leaves these alone under DEBUG (its debug views)


@dataclass(frozen=True)
class _Static:
    enforced_settings: Any  # the settings' dicts this was built from (held, so their identity stays theirs)
    report_only_settings: Any
    enforced: str
    report_only: str
    excluded: tuple[str, ...]
    excluded_ro: tuple[str, ...]


_static: _Static | None = None


def _static_policy() -> _Static:
    """The headers and excluded prefixes of the settings' policy, rebuilt only when the settings object changes
    (a test's override_settings)."""
    global _static
    enforced_settings = getattr(settings, "CONTENT_SECURITY_POLICY", None)
    report_only_settings = getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
    cached = _static
    if (cached is not None and cached.enforced_settings is enforced_settings
            and cached.report_only_settings is report_only_settings):
        return cached
    cached = _Static(enforced_settings, report_only_settings, build_policy(), build_policy(report_only=True),
                     tuple((enforced_settings or {}).get("EXCLUDE_URL_PREFIXES", None) or ()),
                     tuple((report_only_settings or {}).get("EXCLUDE_URL_PREFIXES", None) or ()))
    _static = cached
    return cached


class CSPMiddleware(_CSPMiddleware):
    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if (getattr(request, "_csp_nonce", None) is not None or any(hasattr(response, name) for name in _OVERRIDES)
                or (settings.DEBUG and response.status_code in _PASS_THROUGH_CODES)):
            return super().process_response(request, response)
        static = _static_policy()
        enforced, report_only, excluded, excluded_ro = (static.enforced, static.report_only, static.excluded,
                                                        static.excluded_ro)
        path = request.path_info
        if enforced and HEADER not in response and getattr(response, "_csp_exempt", False) is False \
                and not path.startswith(excluded):
            response[HEADER] = enforced
        if report_only and HEADER_REPORT_ONLY not in response and getattr(response, "_csp_exempt_ro", False) is False \
                and not path.startswith(excluded_ro):
            response[HEADER_REPORT_ONLY] = report_only
        # As the parent: a nonce asked for after the header was written would not be in it.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response
