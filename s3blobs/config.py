"""Configuration from ``S3BLOBS_*`` environment variables.

Credentials are never read here: boto3 finds them through its own chain
(environment, profile, instance role), so no Config can leak one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import ConfigError

MiB = 1024 * 1024
GiB = 1024 * MiB
#: S3's limits on the size of one part of a multipart upload.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
DEFAULT_MAX_BUFFER = 512 * MiB

STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "REDUCED_REDUNDANCY",
        "GLACIER_IR",
        "EXPRESS_ONEZONE",
    }
)
SSE_MODES = {"none": None, "aes256": "AES256", "aws:kms": "aws:kms", "kms": "aws:kms"}
ADDRESSING_STYLES = frozenset({"auto", "virtual", "path"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_PREFIX_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")

T = TypeVar("T")


@dataclass(frozen=True)
class Config:
    """Everything s3blobs needs to know about its bucket; see the README for each field."""

    bucket: str
    region: str | None = None
    endpoint_url: str | None = None
    prefix: str = ""
    part_size: int = 16 * MiB
    max_concurrency: int = 4
    max_buffer: int = 0  # 0: 512 MiB, or what one writer may hold when that is more
    equal_parts: bool | None = None  # None: equal on custom endpoints, unequal on AWS
    redirect: bool = True
    presign_expiry: int = 20 * 60
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    addressing_style: str = "auto"
    cache_size: int = 10_000
    cache_ttl: float = 60.0
    #: ``memory``, or a ``redis://`` / ``rediss://`` URL (out of repr: it may hold a password).
    cache: str = field(default="memory", repr=False)
    #: The grace period of garbage collection, seconds: the default of ``s3blobs gc
    #: --grace``, and twice the age at which the registry refreshes a link it confirms.
    gc_grace: float = 3600.0

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Read every ``S3BLOBS_*`` variable; ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        if env.get("S3BLOBS_COPY_THRESHOLD", "").strip():
            # DESIGN.md lists it from distribution's driver, whose commit copies each blob.
            # s3blobs never copies, so the setting would silently do nothing: refuse it.
            raise ConfigError(
                "S3BLOBS_COPY_THRESHOLD has no effect: s3blobs never copies blobs "
                "(uploads stay where their parts were written); unset it"
            )

        def get(name: str, parse: Callable[[str, str], T], default: T) -> T:
            raw = env.get(f"S3BLOBS_{name}", "").strip()
            return parse(f"S3BLOBS_{name}", raw) if raw else default

        values: dict[str, object] = {
            "bucket": get("BUCKET", _text, ""),
            "region": get("REGION", _text, None),
            "endpoint_url": get("ENDPOINT_URL", _text, None),
            "prefix": get("PREFIX", _text, ""),
            "part_size": get("PART_SIZE", _size, cls.part_size),
            "max_concurrency": get("MAX_CONCURRENCY", _int, cls.max_concurrency),
            "max_buffer": get("MAX_BUFFER", _size, cls.max_buffer),
            "equal_parts": get("EQUAL_PARTS", _auto_bool, None),
            "redirect": get("REDIRECT", _bool, cls.redirect),
            "presign_expiry": get("PRESIGN_EXPIRY", _int, cls.presign_expiry),
            "storage_class": get("STORAGE_CLASS", _text, None),
            "sse": get("SSE", _sse, None),
            "sse_kms_key_id": get("SSE_KMS_KEY_ID", _text, None),
            "addressing_style": get("ADDRESSING_STYLE", _text, cls.addressing_style),
            "cache_size": get("CACHE_SIZE", _int, cls.cache_size),
            "cache_ttl": get("CACHE_TTL", _float, cls.cache_ttl),
            "cache": get("CACHE", _text, "memory"),
            "gc_grace": get("GC_GRACE", _duration, cls.gc_grace),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def key_prefix(self) -> str:
        """The prefix as it stands before every key: empty, or ending in one '/'."""
        return f"{self.prefix}/" if self.prefix else ""


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: for logs and error messages.

    Everything between the scheme and the last '@' is user information, so a
    password holding an unescaped '@' or '/' is hidden too.
    """
    scheme, separator, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not separator or not at or ":" not in userinfo:
        return url if separator or "@" not in url else "***"
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def _check_cache(value: str) -> None:
    if value == "memory":
        return
    match = re.fullmatch(
        r"(rediss?)://(?:[^@]*@)?([^/:?#@]+|\[[0-9a-fA-F:]+\])(:\d+)?(/\d*)?(\?.*)?", value
    )
    if not match:
        raise ConfigError(
            f"S3BLOBS_CACHE={redacted_url(value)}: expected memory, or "
            "redis://[[user]:password@]host[:port][/db] (rediss:// for TLS)"
        )


def _text(name: str, raw: str) -> str:
    return raw


def _int(name: str, raw: str) -> int:
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds") from None


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
}


def _size(name: str, raw: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", raw)
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(f"{name}={raw!r}: expected a size in bytes, or with KiB/MiB/GiB")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(raw: str) -> float:
    """Seconds in ``90s``, ``30m``, ``2h``, ``7d`` (or a bare number of seconds);
    ValueError for anything else."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", raw.strip().lower())
    if not match:
        raise ValueError(f"{raw!r}: expected a duration like 90s, 30m, 2h or 7d")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _duration(name: str, raw: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={exc}") from None


def _bool(name: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def _auto_bool(name: str, raw: str) -> bool | None:
    if raw.lower() == "auto":
        return None
    try:
        return _bool(name, raw)
    except ConfigError:
        raise ConfigError(f"{name}={raw!r}: expected true, false or auto") from None


def _sse(name: str, raw: str) -> str | None:
    if raw.lower() not in SSE_MODES:
        raise ConfigError(f"{name}={raw!r}: expected none, AES256 or aws:kms")
    return SSE_MODES[raw.lower()]


def _check(config: Config) -> None:
    """Reject a value S3 or s3blobs would only trip over later, naming its variable."""
    if not config.bucket:
        raise ConfigError("S3BLOBS_BUCKET is required: the name of the bucket to store blobs in")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", config.bucket):
        raise ConfigError(f"S3BLOBS_BUCKET={config.bucket!r}: not a valid S3 bucket name")
    if config.endpoint_url and not re.match(r"https?://[^/\s]+", config.endpoint_url):
        raise ConfigError(
            f"S3BLOBS_ENDPOINT_URL={config.endpoint_url!r}: expected an http:// or https:// URL"
        )
    prefix = config.prefix.strip("/")
    if prefix and not all(
        _PREFIX_COMPONENT.fullmatch(part) and part not in (".", "..") for part in prefix.split("/")
    ):
        raise ConfigError(
            f"S3BLOBS_PREFIX={config.prefix!r}: expected path components of "
            "letters, digits, '.', '_' and '-', joined by '/'"
        )
    object.__setattr__(config, "prefix", prefix)
    if not MIN_PART_SIZE <= config.part_size <= MAX_PART_SIZE:
        raise ConfigError(
            f"S3BLOBS_PART_SIZE={config.part_size}: S3 takes parts from 5 MiB to 5 GiB"
        )
    if not 1 <= config.max_concurrency <= 64:
        raise ConfigError(f"S3BLOBS_MAX_CONCURRENCY={config.max_concurrency}: expected 1 to 64")
    if config.equal_parts is None:
        # AWS S3 takes parts of any size from 5 MiB; some S3-compatible stores
        # (Cloudflare R2) insist on equal parts, so a custom endpoint gets them unless
        # told otherwise.
        host = re.sub(r"^https?://", "", config.endpoint_url or "").split("/")[0].split(":")[0]
        on_aws = not config.endpoint_url or host.endswith(".amazonaws.com")
        object.__setattr__(config, "equal_parts", not on_aws)
    if not config.max_buffer:
        # one writer: the part filling, the part held back, the parts in flight
        one_writer = config.part_size * (config.max_concurrency + 2)
        object.__setattr__(config, "max_buffer", max(DEFAULT_MAX_BUFFER, one_writer))
    if config.max_buffer < config.part_size:
        raise ConfigError(
            f"S3BLOBS_MAX_BUFFER={config.max_buffer}: must hold at least one part "
            f"(S3BLOBS_PART_SIZE={config.part_size})"
        )
    if not 1 <= config.presign_expiry <= 7 * 24 * 3600:
        raise ConfigError(
            f"S3BLOBS_PRESIGN_EXPIRY={config.presign_expiry}: expected 1 to 604800 seconds "
            "(SigV4 presigned URLs last at most 7 days)"
        )
    if config.storage_class is not None and config.storage_class not in STORAGE_CLASSES:
        raise ConfigError(
            f"S3BLOBS_STORAGE_CLASS={config.storage_class!r}: expected one of "
            + ", ".join(sorted(STORAGE_CLASSES))
        )
    if config.sse not in (None, "AES256", "aws:kms"):
        raise ConfigError(f"S3BLOBS_SSE={config.sse!r}: expected none, AES256 or aws:kms")
    if config.sse_kms_key_id and config.sse != "aws:kms":
        raise ConfigError("S3BLOBS_SSE_KMS_KEY_ID is set, so S3BLOBS_SSE must be aws:kms")
    if config.addressing_style not in ADDRESSING_STYLES:
        raise ConfigError(
            f"S3BLOBS_ADDRESSING_STYLE={config.addressing_style!r}: expected auto, virtual or path"
        )
    if config.cache_size < 0:
        raise ConfigError(f"S3BLOBS_CACHE_SIZE={config.cache_size}: expected 0 (off) or more")
    if config.cache_ttl <= 0:
        raise ConfigError(f"S3BLOBS_CACHE_TTL={config.cache_ttl}: expected seconds > 0")
    _check_cache(config.cache)
    if config.gc_grace < config.cache_ttl:
        raise ConfigError(
            f"S3BLOBS_GC_GRACE={config.gc_grace:g}s is below S3BLOBS_CACHE_TTL="
            f"{config.cache_ttl:g}s: a cached 'exists' may outlive a shorter grace"
        )
