"""One error shape for the whole API: ``{"detail": str, "code": str, ...extra}``.

``exception_handler`` gives every error that shape: service errors, DRF's own (a serializer's field errors
become ``detail`` naming the first bad field, with the full tree under ``errors``), and a body over Django's
DATA_UPLOAD_MAX_MEMORY_SIZE (413 instead of Django's HTML 400). ``axes_lockout_response`` does the same for a
locked-out token request.

``document_error_responses`` is a drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS) that writes the
errors every endpoint can answer into the schema, so a client (and tests/security/test_api_fuzz.py) can rely on
"every status code the API sends is documented": 401 without credentials, 403 for a role without the capability
(or a session write without its CSRF token), 404 for a project or object outside the caller's projects, 400 for
invalid input, 413 for a body over the size limit, 415 for a Content-Type the endpoint does not read. Codes a
view documents itself keep its description; an error documented without a body gets the error shape.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import serializers
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from labeling.services.errors import ServiceError, ValidationFailed

ERROR_COMPONENT = "ApiError"
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The API's one error shape; some errors add fields (e.g. `field`, `path`, `annotation_id`).",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for a person."},
        "code": {"type": "string", "description": "A stable machine-readable code."},
    },
    "required": ["detail"],
    "additionalProperties": True,
}
_DESCRIPTIONS = {
    "400": "Invalid input; `detail` names what is wrong.",
    "401": "No valid credentials (token or session).",
    "403": "Your role may not do this here (or a session write came without its CSRF token).",
    "404": "No such project or object among your projects.",
    "413": "The request body is larger than the limit.",
    "415": "The request's Content-Type is not one this endpoint reads.",
}


# DRF's own errors get a code by status where the exception does not carry one (Http404, PermissionDenied).
_CODE_BY_STATUS = {400: "invalid", 401: "not_authenticated", 403: "permission_denied", 404: "not_found",
                   405: "method_not_allowed", 406: "not_acceptable", 413: "too_large",
                   415: "unsupported_media_type", 429: "throttled"}


def _first_problem(errors: Any, prefix: str = "") -> tuple[str, str]:
    """The first (field path, message) of a DRF validation error tree, e.g. ("labels[0]", "Not a valid string.")."""
    if isinstance(errors, dict) and errors:
        key, value = next(iter(errors.items()))
        path = f"{prefix}.{key}" if prefix else str(key)
        return _first_problem(value, "" if key == "non_field_errors" else path)
    if isinstance(errors, list) and errors:
        first = errors[0]
        if isinstance(first, dict | list):
            return _first_problem(first, f"{prefix}[0]")
        return prefix, str(first)
    return prefix, str(errors)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return Response({"detail": exc.message, "code": exc.code, **exc.extra}, status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        # Django refuses to read a body over DATA_UPLOAD_MAX_MEMORY_SIZE; without this it would answer an HTML 400.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response({"detail": f"the request body is larger than the limit of {limit:,} bytes",
                         "code": "too_large"}, status=413)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, ValidationError) and not (isinstance(data, dict) and "detail" in data):
        # A serializer's {field: [messages]} becomes the one shape, naming the first bad field.
        field, message = _first_problem(data)
        body: dict[str, Any] = {"detail": f"{field}: {message}" if field else message, "code": "invalid",
                                "errors": data}
        if field:
            body["field"] = field
        response.data = body
    elif isinstance(data, dict) and "detail" in data and "code" not in data:
        codes = exc.get_codes() if isinstance(exc, APIException) else None
        data["code"] = codes if isinstance(codes, str) else _CODE_BY_STATUS.get(response.status_code, "error")
    return response


LOCKED_OUT = "Account locked: too many login attempts. Please try again later."


def axes_lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                          credentials: dict[str, Any] | None = None) -> HttpResponse:
    """django-axes' answer to a locked-out login (AXES_LOCKOUT_CALLABLE): the API's error shape under /api/."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": LOCKED_OUT, "code": "locked_out"}, status=429)
    return HttpResponse(LOCKED_OUT, status=429, content_type="text/plain; charset=utf-8")


def _error_response(code: str) -> dict[str, Any]:
    return {"description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}}}


def document_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Add the API-wide error responses to every operation that can answer them."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = _ERROR_SCHEMA
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            authenticated = any(requirement for requirement in operation.get("security", [{}]))
            parameters = operation.get("parameters", [])
            wanted = []
            if operation.get("requestBody") or any(p.get("in") == "query" for p in parameters):
                wanted.append("400")
            if operation.get("requestBody"):
                # 415: DRF refuses a Content-Type none of the view's parsers reads (a multipart body whose header
                # it cannot parse included), before the view runs.
                wanted += ["413", "415"]
            if authenticated:
                wanted += ["401", "403"]
            if any(p.get("in") == "path" for p in parameters):
                wanted.append("404")
            for code in wanted:
                responses.setdefault(code, _error_response(code))
            for code, response in responses.items():
                # An error a view documented by description alone still comes in the one error shape.
                if code.isdigit() and int(code) >= 400 and not response.get("content"):
                    response["content"] = _error_response("400")["content"]
    return result


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:  # type: ignore[type-arg]
    """Validate a request body; the first problem becomes a 400 in the API's one error shape, naming the field."""
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        field, problems = next(iter(serializer.errors.items()))
        problem = problems[0] if isinstance(problems, list) and problems else problems
        raise ValidationFailed(f"{field}: {problem}", field=field)
    return dict(serializer.validated_data)
