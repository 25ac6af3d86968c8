"""Errors services raise. Each carries the HTTP status the API maps it to, so views stay thin."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class ValidationFailed(ServiceError):
    status = 400
    code = "invalid"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class PermissionDenied(ServiceError):
    status = 403
    code = "permission_denied"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class KeyReused(ServiceError):
    """An idempotency key sent again with a different body: replaying the first answer would be a lie."""

    status = 422
    code = "idempotency_key_reused"
