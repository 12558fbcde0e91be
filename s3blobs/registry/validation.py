"""What a manifest must be before anything of it is written.

Only the four manifest media types are accepted (OCI image manifest and index,
Docker schema 2 manifest and manifest list): anything else, ``text/html`` first,
would be served back from the registry's origin under the type it was pushed with.
The body is checked against its type's shape, field by field (the OCI image-spec
schemas, written as explicit checks so that each refusal names the field): the
descriptors a manifest names, their media types, digests and sizes, annotations,
``subject`` and ``artifactType``. Nesting is bounded, so a ``[[[[...`` bomb is a 400,
not a recursion error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..digests import parse_digest
from ..errors import BlobError
from .errors import manifest_invalid

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES

#: Real manifests nest five levels at most (index, manifests, descriptor, platform,
#: features); the bound leaves room and stops bombs.
MAX_DEPTH = 16
MAX_URL = 2048
# RFC 6838's restricted names: type/subtype, no spaces, quotes or control characters.
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_URL = re.compile(r"https?://[\x21-\x7e]+")


def validate_manifest(body: bytes, content_type: str) -> tuple[str, dict[str, Any]]:
    """The manifest's media type and its parsed content; MANIFEST_INVALID otherwise."""
    manifest = _parse(body)
    declared = manifest.get("mediaType")
    if "mediaType" in manifest and (
        not isinstance(declared, str) or declared not in MANIFEST_TYPES
    ):
        raise manifest_invalid(f"mediaType: not a manifest media type ({_accepted()})")
    sent = content_type.split(";")[0].strip().lower()
    if sent and sent not in MANIFEST_TYPES:
        raise manifest_invalid(f"Content-Type {sent[:100]!r} is not accepted ({_accepted()})")
    media_type = sent or declared
    if not media_type:
        raise manifest_invalid("no media type: send Content-Type or a mediaType field")
    if declared and declared != media_type:
        raise manifest_invalid(f"mediaType {declared!r} differs from Content-Type")
    schema_version = manifest.get("schemaVersion")
    if type(schema_version) is not int or schema_version != 2:
        raise manifest_invalid("schemaVersion must be 2")
    if media_type in INDEX_TYPES:
        _no_fields(manifest, ("config", "layers"), "an index")
        _descriptor_list(manifest, "manifests")
    else:
        _no_fields(manifest, ("manifests",), "an image manifest")
        if "config" not in manifest:
            raise manifest_invalid("config: required")
        _descriptor(manifest["config"], "config")
        _descriptor_list(manifest, "layers")
    if "subject" in manifest:
        _descriptor(manifest["subject"], "subject")
    if "artifactType" in manifest:
        _media_type(manifest["artifactType"], "artifactType")
    _annotations(manifest, "")
    return media_type, manifest


def _accepted() -> str:
    return "accepted: " + ", ".join(sorted(MANIFEST_TYPES))


def _parse(body: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(body)
    except RecursionError:
        raise manifest_invalid(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise manifest_invalid(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(manifest, dict):
        raise manifest_invalid("a manifest is a JSON object")
    pending: list[tuple[Any, int]] = [(manifest, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise manifest_invalid(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            pending.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            pending.extend((child, depth + 1) for child in value)
    return manifest


def _no_fields(manifest: dict[str, Any], fields: tuple[str, ...], kind: str) -> None:
    for name in fields:
        if name in manifest:
            raise manifest_invalid(f"{name}: {kind} has no {name}")


def _descriptor_list(manifest: dict[str, Any], field: str) -> None:
    items = manifest.get(field)
    if not isinstance(items, list):
        raise manifest_invalid(f"{field}: required, a list of descriptors")
    for i, item in enumerate(items):
        _descriptor(item, f"{field}[{i}]")


def _descriptor(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise manifest_invalid(f"{where}: expected a descriptor (an object)")
    _media_type(value.get("mediaType"), f"{where}.mediaType")
    digest = value.get("digest")
    if not isinstance(digest, str):
        raise manifest_invalid(f"{where}.digest: required, a string")
    try:
        parse_digest(digest)
    except BlobError as exc:
        raise manifest_invalid(f"{where}.digest: {exc}") from None
    size = value.get("size")
    if type(size) is not int or size < 0:
        raise manifest_invalid(f"{where}.size: required, a whole number >= 0")
    urls = value.get("urls", [])
    if not isinstance(urls, list) or not all(
        isinstance(url, str) and len(url) <= MAX_URL and _URL.fullmatch(url) for url in urls
    ):
        raise manifest_invalid(f"{where}.urls: a list of http(s) URLs")
    if "artifactType" in value:
        _media_type(value["artifactType"], f"{where}.artifactType")
    if "data" in value and not isinstance(value["data"], str):
        raise manifest_invalid(f"{where}.data: base64 text")
    platform = value.get("platform", {})
    if not isinstance(platform, dict) or not all(
        isinstance(platform.get(key, ""), str) for key in ("architecture", "os", "variant")
    ):
        raise manifest_invalid(f"{where}.platform: an object of strings (architecture, os)")
    _annotations(value, f"{where}.")


def _media_type(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _MEDIA_TYPE.fullmatch(value):
        raise manifest_invalid(f"{where}: required, a media type such as type/subtype")


def _annotations(container: dict[str, Any], where: str) -> None:
    annotations = container.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(value, str) for value in annotations.values()
    ):
        raise manifest_invalid(f"{where}annotations: a map of strings to strings")
