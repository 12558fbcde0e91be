"""The Descriptor: what a registry knows about a blob without reading it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .digests import parse_digest
from .errors import BlobInvalidDigest


@dataclass(frozen=True)
class Descriptor:
    """A blob's media type, size and digest, with the OCI descriptor's optional fields."""

    media_type: str
    size: int
    digest: str
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, Any] | None = None

    def __hash__(self) -> int:
        # The mappings are not hashable; the content address identifies the blob.
        return hash((self.media_type, self.size, self.digest))

    def validate(self) -> Descriptor:
        """Raise a named error unless the digest parses and the size is >= 0."""
        parse_digest(self.digest)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise BlobInvalidDigest(self.digest, f"size must be an integer >= 0, got {self.size!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The descriptor under its wire names, with empty optional fields left out."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "size": self.size,
            "digest": self.digest,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Descriptor:
        try:
            return cls(
                media_type=data.get("mediaType", ""),
                size=data["size"],
                digest=data["digest"],
                urls=tuple(data.get("urls") or ()),
                annotations=dict(data.get("annotations") or {}),
                platform=data.get("platform") or None,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a descriptor: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Descriptor:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a descriptor is a JSON object")
        return cls.from_dict(data)
