"""API tokens follow the credentials and the access they were issued for.

A token is a password-equivalent that never expires on its own. So when the password it was obtained with
changes (the owner suspects it leaked, or an admin reset it), or the user loses a project membership (they left
the team), every token of that user is revoked: whoever copied one keeps nothing. The owner gets a new one from
``POST /api/auth/token/`` with the current password. Sessions need no help here: Django already ends them on a
password change (the session auth hash).

Why a password validator carries the hook: ``AbstractBaseUser.save()`` calls every configured validator's
``password_changed`` after any ``set_password`` is saved, which is every path that changes a password (the
admin, ``manage.py changepassword``, ``add_member --password``, the demo loader). One hook there cannot be
forgotten by the next path, as a call in each path could.
"""

from __future__ import annotations

from typing import Any

from rest_framework.authtoken.models import Token


def tokens_revoke(*, user: Any) -> int:
    """Delete every API token of ``user``; returns how many there were."""
    if user is None or user.pk is None:
        return 0
    deleted, _ = Token.objects.filter(user_id=user.pk).delete()
    return deleted


class RevokeTokensOnPasswordChange:
    """Listed in ``AUTH_PASSWORD_VALIDATORS`` for its ``password_changed`` hook; it refuses no password."""

    def validate(self, password: str, user: Any = None) -> None:
        return None

    def password_changed(self, password: str, user: Any = None) -> None:
        tokens_revoke(user=user)

    def get_help_text(self) -> str:
        return "Changing your password revokes your API tokens."
