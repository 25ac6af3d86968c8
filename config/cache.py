"""A Redis cache whose failures are misses: ``ResilientRedisCache`` (django-redis's IGNORE_EXCEPTIONS, for Django's
own backend).

What lives in the cache is disposable by design: the queue's rank floor (a hint; without it the checkout walks the
ranking from its top) and DRF's throttle history. Neither may take the reviewer path down with it, so when Redis is
down or hung (the settings give it half-second socket timeouts) a read answers as a miss, a write is dropped, and
the failure is logged once per burst rather than once per call. After a failure the process skips Redis for
``SKIP_SECONDS`` (every call is a miss at once), so a hung Redis costs one timeout per process per few seconds,
not one per cache call of every request. The cost is stated, not hidden: while Redis is
down a throttle built on the cache does not throttle (the login lock-out, django-axes, keeps its state in the
database and still applies).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

logger = logging.getLogger(__name__)

# At most one warning per this many seconds: an outage under load would otherwise log every request.
LOG_EVERY_SECONDS = 10.0
# After a failure, calls skip Redis (answer as misses) for this long, then try again.
SKIP_SECONDS = 5.0


def _failures() -> tuple[type[BaseException], ...]:
    import redis

    # redis.RedisError covers ConnectionError and TimeoutError (its own classes); OSError covers the socket layer.
    return (redis.RedisError, OSError)


class ReusedClientRedisCacheClient(RedisCacheClient):
    """Django's client, but it builds one ``redis.Redis`` per connection pool instead of one per cache call.

    ``redis.Redis.__init__`` fills a dictionary of some 200 response callbacks, and Django's client runs it on
    every get and set; on the queue's hot path (one rank-floor read per checkout) that was 3% of the web process's
    CPU. A ``redis.Redis`` object is safe to share between threads: it takes a connection from its pool per command.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        # The stubs do not declare RedisCacheClient's private helpers; these are the ones its own get_client uses.
        index = self._get_connection_pool_index(write)  # type: ignore[attr-defined]
        client = self._clients.get(index)
        if client is None:
            # A race builds two clients on one pool; either is fine and the dict keeps one of them.
            pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
            client = self._clients[index] = self._client(connection_pool=pool)  # type: ignore[attr-defined]
        return client


class ResilientRedisCache(RedisCache):
    _last_logged = 0.0  # one warning per LOG_EVERY_SECONDS for the whole process
    _down_until = 0.0  # per instance (Django keeps one per thread and alias): skip Redis until then

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient

    def _guard(self, operation: str, call: Callable[[], Any], default: Any) -> Any:
        now = time.monotonic()
        if now < self._down_until:
            return default
        try:
            return call()
        except _failures():
            self._down_until = time.monotonic() + SKIP_SECONDS
            if now - ResilientRedisCache._last_logged >= LOG_EVERY_SECONDS:
                ResilientRedisCache._last_logged = now
                logger.warning("cache %s failed; answering as a miss for %.0f s (Redis down?)", operation,
                               SKIP_SECONDS, exc_info=True)
            return default

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._guard("get", lambda: super(ResilientRedisCache, self).get(key, default, version), default)

    def get_many(self, keys: Any, version: Any = None) -> dict[Any, Any]:
        result: dict[Any, Any] = self._guard("get_many", lambda: super(ResilientRedisCache, self).get_many(
            keys, version), {})
        return result

    def has_key(self, key: Any, version: Any = None) -> bool:
        return bool(self._guard("has_key", lambda: super(ResilientRedisCache, self).has_key(key, version), False))

    def add(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> bool:
        return bool(self._guard("add", lambda: super(ResilientRedisCache, self).add(key, value, timeout, version),
                                False))

    def set(self, key: Any, value: Any, timeout: Any = None, version: Any = None) -> None:
        self._guard("set", lambda: super(ResilientRedisCache, self).set(key, value, timeout, version), None)

    def set_many(self, data: Any, timeout: Any = None, version: Any = None) -> list[Any]:
        failed: list[Any] = self._guard("set_many", lambda: super(ResilientRedisCache, self).set_many(
            data, timeout, version), list(data))
        return failed

    def touch(self, key: Any, timeout: Any = None, version: Any = None) -> bool:
        return bool(self._guard("touch", lambda: super(ResilientRedisCache, self).touch(key, timeout, version),
                                False))

    def delete(self, key: Any, version: Any = None) -> bool:
        return bool(self._guard("delete", lambda: super(ResilientRedisCache, self).delete(key, version), False))

    def delete_many(self, keys: Any, version: Any = None) -> None:
        self._guard("delete_many", lambda: super(ResilientRedisCache, self).delete_many(keys, version), None)

    def incr(self, key: Any, delta: int = 1, version: Any = None) -> int:
        # A missing key raises ValueError (Django's contract); an unreachable Redis raises that too, so callers
        # that handle "no such key" handle the outage the same way.
        missing = object()
        value = self._guard("incr", lambda: super(ResilientRedisCache, self).incr(key, delta, version), missing)
        if value is missing:
            raise ValueError("cache unavailable")
        return int(value)

    def clear(self) -> None:
        self._guard("clear", lambda: super(ResilientRedisCache, self).clear(), None)
