"""Token authentication with the look-up in plain SQL: the API's default (config/settings.py).

Same rules and messages as DRF's ``TokenAuthentication`` (which it subclasses, so the OpenAPI schema and the
``Authorization: Token <key>`` header are unchanged): an unknown key is 401 "Invalid token.", an inactive user
401 "User inactive or deleted.". The only difference is cost. DRF builds
``Token.objects.select_related("user").get(key=...)`` through the ORM on every request, and compiling that query
is about a millisecond of CPU on this class of machine; the queue answers two requests per labelled item, at
hundreds per second (bench/queue_latency.py), so here the statement is written once and the two rows are built
with ``from_db``. Being the one token class of the API also keeps the OpenAPI schema to one
``tokenAuth`` security scheme.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.db import connection
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.throttling import BaseThrottle


@functools.cache
def _lookup() -> tuple[str, list[str], list[str]]:
    user_model = get_user_model()
    quote = connection.ops.quote_name
    token_fields = [(field.attname, quote(str(field.column))) for field in Token._meta.concrete_fields]
    user_fields = [(field.attname, quote(str(field.column))) for field in user_model._meta.concrete_fields]
    columns = [f"t.{column}" for _name, column in token_fields] + [f"u.{column}" for _name, column in user_fields]
    # Only model metadata goes into the text; the key is a bound parameter.
    sql = (f"SELECT {', '.join(columns)} FROM {quote(Token._meta.db_table)} t "  # noqa: S608
           f"JOIN {quote(user_model._meta.db_table)} u ON u.{quote(user_model._meta.pk.attname)} = t.user_id "
           "WHERE t.key = %s")
    return sql, [name for name, _column in token_fields], [name for name, _column in user_fields]


class SqlTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        sql, token_fields, user_fields = _lookup()
        with connection.cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token = Token.from_db(connection.alias, token_fields, row[:len(token_fields)])
        user = get_user_model().from_db(connection.alias, user_fields, row[len(token_fields):])
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token.user = user
        return user, token


def client_ip(request: HttpRequest) -> str | None:
    """The client's address for throttling and lock-outs: DRF's ``NUM_PROXIES`` rule, so django-axes (which calls
    this through ``AXES_CLIENT_IP_CALLABLE``) and DRF's throttles key on the same address. ``NUM_PROXIES`` comes
    from ``SIFT_BEHIND_PROXY``/``SIFT_PROXY_COUNT`` (config/settings.py says why).

    None where the request has no address (a test client's ``force_login``), as axes's own look-up answers. A
    value that is not an address (a misconfigured proxy passing the client's header through) falls back to
    ``REMOTE_ADDR``: axes stores addresses in an IP field, and garbage there would be a 500 on every login."""
    ident = BaseThrottle().get_ident(cast(Any, request))  # it reads request.META only
    if not ident:
        return None
    try:
        return str(ipaddress.ip_address(str(ident)))
    except ValueError:
        remote = request.META.get("REMOTE_ADDR")
        return str(remote) if remote else None
