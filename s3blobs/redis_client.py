"""One Redis for every cache of a storage: key layout, generations, and stepping aside.

Keys live under a namespace derived from the bucket and ``S3BLOBS_PREFIX``, so
registries on other buckets or prefixes can share the Redis:

```
<ns>epoch                          random token, replaced after a missed invalidation
<ns>gen:<digest>                   random token, replaced by every invalidation of <digest>
<ns><kind>:<epoch>:<gen>:<digest>:<scope>   a cached value, with a TTL
<ns>m:<digest>                     an immutable value (a manifest), with a TTL
```

A value is found only under the current epoch and generation, so an invalidation
is one SET whatever the number of repositories that cached the digest, and what it
replaced can never be read again (it expires on its own). Tokens are random rather
than counters, so a generation key that expired or was evicted cannot come back with
an old value. A writer that read the tokens before asking S3 stores under those, so
a stat that raced a delete stores where no one will look.

Redis is a cache, never a dependency: a failed or slow command (timeouts of a few
milliseconds) makes the cache step aside, a miss for reads and nothing for writes,
so S3 answers; the failure is counted in ``stats`` and logged at most every
``LOG_EVERY`` seconds. The cache stays aside 50 ms after one failure, twice as long
after each failure in a row, at most ``retry_after`` seconds: a stray timeout costs
little, and a Redis that is down costs one attempt a second. An invalidation is
made with a longer timeout (a delete may wait; a stat may not); if it fails, the
whole namespace is invalidated (a new epoch) at the first moment Redis answers
again, before this process reads anything from it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, ConnectionPool, parse_url
from redis.retry import Retry

from .config import Config, redacted_url
from .errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Socket timeout (seconds) of cache reads and writes; a URL's ``?socket_timeout=``
#: overrides it. Python threads switch every 5 ms, so less would fail for nothing.
DEFAULT_TIMEOUT = 0.02
#: Timeout of opening a connection (a TLS handshake included), once per pooled
#: connection; a URL's ``?socket_connect_timeout=`` overrides it.
DEFAULT_CONNECT_TIMEOUT = 0.1
#: Socket timeout of invalidations and epoch resets: a delete can wait this long.
INVALIDATION_TIMEOUT = 0.5
#: How long the cache stays aside after the first failure, and at most.
FIRST_RETRY_AFTER = 0.05
RETRY_AFTER = 1.0
#: At most one warning per this many seconds while Redis fails.
LOG_EVERY = 30.0
#: What a command to an unwell Redis raises (redis-py wraps most socket errors).
REDIS_TROUBLE = (redis.RedisError, OSError)

# Reads (or writes) a value under the current epoch and generation of a digest,
# creating either token if it is missing; answers {token, value}.
_UNDER_TOKENS = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local gen = redis.call('GET', KEYS[2])
if not gen then
  gen = ARGV[2]
  redis.call('SET', KEYS[2], gen, 'PX', ARGV[3])
end
local token = epoch .. ':' .. gen
local key = ARGV[4] .. token .. ARGV[5]
if ARGV[6] == 'set' then
  redis.call('SET', key, ARGV[7], 'PX', ARGV[8])
  return {token, false}
end
return {token, redis.call('GET', key)}
"""


def namespace_for(config: Config) -> str:
    """``s3blobs:<bucket>:`` or ``s3blobs:<bucket>/<prefix>:`` (neither a bucket name
    nor a prefix can hold ':', and a bucket name cannot hold '/')."""
    where = f"{config.bucket}/{config.prefix}" if config.prefix else config.bucket
    return f"s3blobs:{where}:"


@dataclass
class RedisStats:
    """What went wrong with Redis, for metrics."""

    failures: int = 0  # commands that failed or timed out
    skipped: int = 0  # cache operations not tried while the cache stood aside
    missed_invalidations: int = 0  # invalidations that could not be made
    epoch_resets: int = 0  # whole-namespace invalidations that made up for them


class RedisCache:
    """The connection to Redis and the key layout every cache of one storage shares."""

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        retry_after: float = RETRY_AFTER,
        invalidation_timeout: float = INVALIDATION_TIMEOUT,
    ) -> None:
        self.url = redacted_url(url)
        self.namespace = namespace
        self.retry_after = retry_after
        self.stats = RedisStats()
        options = _connection_options(url)
        timeout = float(options.pop("socket_timeout", DEFAULT_TIMEOUT))
        connect_timeout = float(options.pop("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT))
        self._fast = _client(options, timeout, connect_timeout)
        self._sure = _client(options, max(timeout, invalidation_timeout), invalidation_timeout)
        self._under_tokens = self._fast.register_script(_UNDER_TOKENS)
        # Lifetime of a generation key, raised by the caches to outlive their values.
        self._generation_ttl = 3600.0
        self._lock = threading.Lock()
        self._aside_until = 0.0
        self._failures_in_a_row = 0
        self._failing = False
        self._warned = False
        self._missed = 0  # invalidations missed since the last epoch reset
        self._last_warning = -LOG_EVERY
        self._unreported = 0

    # Values under the current tokens of a digest --------------------------------

    def read(self, kind: str, digest: str, scope: str = "") -> tuple[str | None, bytes | None]:
        """(token, value) of ``kind`` for ``digest`` in ``scope``; (None, None) when
        Redis did not answer (then nothing may be stored under that read)."""
        found = self._attempt(lambda: self._run_under_tokens(kind, digest, scope, "get"), None)
        if found is None:
            return None, None
        token, value = found
        return token.decode(), value

    def write(
        self, kind: str, digest: str, scope: str, value: bytes, ttl: float, token: str | None
    ) -> None:
        """Store under ``token`` (from :meth:`read`), or under the current tokens when
        ``token`` is None."""
        if token is None:
            self._attempt(
                lambda: self._run_under_tokens(kind, digest, scope, "set", value, ttl), None
            )
            return
        key = f"{self.namespace}{kind}:{token}:{digest}:{scope}"
        self._attempt(lambda: self._fast.set(key, value, px=_ms(ttl)), None)

    def invalidate(self, digest: str) -> None:
        """Make every value cached for ``digest``, in every scope, unreachable: one SET."""
        key = f"{self.namespace}gen:{digest}"
        try:
            self._sure.set(key, secrets.token_hex(8), px=_ms(self._generation_ttl))
        except REDIS_TROUBLE as exc:
            with self._lock:
                self._missed += 1
                self.stats.missed_invalidations += 1
            self._failed(exc)

    # Immutable values -------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        found = self._attempt(lambda: self._fast.get(self.namespace + key), None)
        return found if isinstance(found, bytes) else None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        self._attempt(lambda: self._fast.set(self.namespace + key, value, px=_ms(ttl)), None)

    def delete(self, key: str) -> None:
        self._attempt(lambda: self._sure.delete(self.namespace + key), None)

    # Tokens -----------------------------------------------------------------------

    def keep_generations_for(self, ttl: float) -> None:
        """Generation keys outlive values of ``ttl`` seconds (a generation that expires
        early only costs misses)."""
        self._generation_ttl = max(self._generation_ttl, 2 * ttl)

    def _run_under_tokens(
        self, kind: str, digest: str, scope: str, mode: str, value: bytes = b"", ttl: float = 0
    ) -> tuple[bytes, bytes | None]:
        ns = self.namespace
        result = self._under_tokens(
            keys=[f"{ns}epoch", f"{ns}gen:{digest}"],
            args=[
                secrets.token_hex(8),
                secrets.token_hex(8),
                _ms(self._generation_ttl),
                f"{ns}{kind}:",
                f":{digest}:{scope}",
                mode,
                value,
                _ms(ttl),
            ],
            client=self._fast,
        )
        token, found = result
        return token, found

    def _reset_epoch(self) -> None:
        """Invalidate the whole namespace, for the invalidations this process missed."""
        with self._lock:
            missed = self._missed
        self._sure.set(f"{self.namespace}epoch", secrets.token_hex(8))
        with self._lock:
            self.stats.epoch_resets += 1
            if self._missed == missed:
                self._missed = 0
        log.warning(
            "Redis cache %s: every cached entry dropped, for %d invalidation(s) Redis missed",
            self.url,
            missed,
        )

    # Stepping aside ---------------------------------------------------------------

    def _attempt(self, call: Callable[[], T], fallback: T) -> T:
        if time.monotonic() < self._aside_until:
            with self._lock:
                self.stats.skipped += 1
            return fallback
        try:
            if self._missed:
                self._reset_epoch()
            result = call()
        except REDIS_TROUBLE as exc:
            self._failed(exc)
            return fallback
        if self._failing:
            self._recovered()
        return result

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self.stats.failures += 1
            self._failures_in_a_row += 1
            aside = FIRST_RETRY_AFTER * 2 ** min(self._failures_in_a_row - 1, 16)
            self._aside_until = now + min(aside, self.retry_after)
            self._failing = True
            self._unreported += 1
            if now - self._last_warning < LOG_EVERY:
                return
            self._last_warning, count, self._unreported = now, self._unreported, 0
            self._warned = True
        log.warning(
            "Redis cache %s unavailable (%s: %s): S3 answers instead until Redis answers "
            "again (%d failure(s) since the last warning)",
            self.url,
            type(exc).__name__,
            exc,
            count,
        )

    def _recovered(self) -> None:
        with self._lock:
            if not self._failing:
                return
            self._failing = False
            self._failures_in_a_row = 0
            warned, self._warned = self._warned, False
        if warned:  # the warning's counterpart, no more often than the warning
            log.warning("Redis cache %s answers again", self.url)

    def close(self) -> None:
        self._fast.close()
        self._sure.close()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _connection_options(url: str) -> dict[str, Any]:
    """redis-py's reading of the URL, checked now (a connection object is built, not
    connected): a ConfigError that hides any password, never a failure per request."""
    try:
        options = dict(parse_url(url))  # type: ignore[no-untyped-call]
        settings = {name: value for name, value in options.items() if name != "connection_class"}
        options.get("connection_class", Connection)(**settings)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"S3BLOBS_CACHE={redacted_url(url)}: {exc}") from None
    return options


def _client(options: dict[str, Any], timeout: float, connect_timeout: float) -> redis.Redis:
    options = dict(options)
    connection_class = options.pop("connection_class", Connection)
    pool = ConnectionPool(
        connection_class=connection_class,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        # One immediate retry on a broken connection (a pooled socket that a Redis
        # restart closed); none on a timeout, which would only double the wait.
        retry=Retry(NoBackoff(), 1, (redis.ConnectionError,)),
        client_name="s3blobs",
        **options,
    )
    return redis.Redis(connection_pool=pool)
