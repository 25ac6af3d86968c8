"""A Redis cache whose failures are misses: ``ResilientRedisCache`` (django-redis's IGNORE_EXCEPTIONS, for Django's
own backend).

What lives in the cache is disposable by design: the queue's rank floor (a hint; without it the checkout walks the
ranking from its top) and DRF's throttle history. Neither may take the reviewer path down with it, so when Redis is
down or hung (the settings give it half-second socket timeouts) a read answers as a miss, a write is dropped, and
the failure is logged once per burst rather than once per call. The cost is stated, not hidden: while Redis is
down a throttle built on the cache does not throttle (the login lock-out, django-axes, keeps its state in the
database and still applies).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)

# At most one warning per this many seconds: an outage under load would otherwise log every request.
LOG_EVERY_SECONDS = 10.0


def _failures() -> tuple[type[BaseException], ...]:
    import redis

    # redis.RedisError covers ConnectionError and TimeoutError (its own classes); OSError covers the socket layer.
    return (redis.RedisError, OSError)


class ResilientRedisCache(RedisCache):
    _last_logged = 0.0

    def _failed(self, operation: str) -> None:
        now = time.monotonic()
        if now - ResilientRedisCache._last_logged >= LOG_EVERY_SECONDS:
            ResilientRedisCache._last_logged = now
            logger.warning("cache %s failed; answering as a miss (Redis down?)", operation, exc_info=True)

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        try:
            return super().get(key, default, version)
        except _failures():
            self._failed("get")
            return default

    def get_many(self, keys: Any, version: Any = None) -> dict[Any, Any]:
        try:
            return super().get_many(keys, version)
        except _failures():
            self._failed("get_many")
            return {}

    def has_key(self, key: Any, version: Any = None) -> bool:
        try:
            return super().has_key(key, version)
        except _failures():
            self._failed("has_key")
            return False

    def add(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> bool:
        try:
            return super().add(key, value, timeout, version)
        except _failures():
            self._failed("add")
            return False

    def set(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> None:
        try:
            super().set(key, value, timeout, version)
        except _failures():
            self._failed("set")

    def set_many(self, data: Any, timeout: Any = None, version: Any = None) -> list[Any]:
        try:
            return super().set_many(data, timeout, version)
        except _failures():
            self._failed("set_many")
            return list(data)

    def touch(self, key: Any, timeout: Any = None, version: Any = None) -> bool:
        try:
            return super().touch(key, timeout, version)
        except _failures():
            self._failed("touch")
            return False

    def delete(self, key: Any, version: Any = None) -> bool:
        try:
            return super().delete(key, version)
        except _failures():
            self._failed("delete")
            return False

    def delete_many(self, keys: Any, version: Any = None) -> None:
        try:
            super().delete_many(keys, version)
        except _failures():
            self._failed("delete_many")

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> int:
        # A missing key raises ValueError (Django's contract); an unreachable Redis raises that too, so callers
        # that handle "no such key" handle the outage the same way.
        try:
            return super().incr(key, delta, version)
        except _failures() as exc:
            self._failed("incr")
            raise ValueError("cache unavailable") from exc

    def clear(self) -> None:
        try:
            super().clear()
        except _failures():
            self._failed("clear")
