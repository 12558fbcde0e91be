"""The listings gc reads, side by side: entries over their fan-out, repositories by
the first character of their names, data objects, uploads and multipart uploads.

What is kept is per digest (an entry's size and age, the newest link's age), per
manifest revision, per data object and per open upload, never per object read: a
blob linked into 500 repositories costs one number, not 500 keys.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import BlobUploadUnknown
from ..paths import RepositoryKey
from ..s3 import s3_errors
from ..uploads import UploadState, upload_id_of
from .context import GcContext, KeyRange

#: The most ranges ``repositories/`` is listed in at once.
MAX_RANGES = 64


@dataclass(slots=True)
class Entry:
    size: int
    modified: float


@dataclass(slots=True)
class OpenUpload:
    """The objects of one upload under ``_uploads/<writer id>/``."""

    keys: list[str] = field(default_factory=list)
    bytes: int = 0
    newest: float = 0.0
    state_key: str = ""


@dataclass(frozen=True)
class MultipartUpload:
    key: str
    upload_id: str
    initiated: float


@dataclass
class RepositoryListing:
    """What one pass over ``repositories/`` found."""

    newest_link: dict[str, float] = field(default_factory=dict)  # digest -> LastModified
    revisions: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    tags: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    referrers: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    #: link keys of the digests in ``watch`` (set before the pass): what gc deletes
    watched_links: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    watch: frozenset[str] = frozenset()


@dataclass
class Inventory:
    entries: dict[str, Entry] = field(default_factory=dict)
    repositories: RepositoryListing = field(default_factory=RepositoryListing)
    data: dict[str, Entry] = field(default_factory=dict)  # data key -> size, age
    uploads: dict[str, OpenUpload] = field(default_factory=lambda: defaultdict(OpenUpload))
    multipart: list[MultipartUpload] = field(default_factory=list)
    #: data keys of open uploads, from their states; None when a state could not tell
    upload_data_keys: set[str] | None = field(default_factory=set)
    #: entries open uploads saved their bytes in (kept while the upload lives)
    upload_entries: set[str] = field(default_factory=set)


def list_uploads(ctx: GcContext, inventory: Inventory) -> None:
    """Upload objects, grouped by writer id; the multipart uploads under ``data/``;
    then each upload's state, for the data key it names (a commit in progress has
    completed its data object before it writes the entry that names it)."""
    paths = ctx.paths

    def on_page(items: list[dict[str, Any]]) -> None:
        for item in items:
            token = paths.upload_token_of(item["Key"])
            if token is None:
                continue
            upload = inventory.uploads[token]
            upload.keys.append(item["Key"])
            upload.bytes += int(item["Size"])
            upload.newest = max(upload.newest, item["LastModified"].timestamp())
            if item["Key"] == paths.upload_state(token):
                upload.state_key = item["Key"]
        ctx.report.count_listed("upload_objects", len(items))

    ctx.list_prefixes([paths.uploads_root], on_page, "listing uploads")
    with s3_errors("listing multipart uploads"):
        pages = ctx.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=ctx.bucket, Prefix=paths.data_root
        )
        for page in pages:
            for upload in page.get("Uploads", ()):
                inventory.multipart.append(
                    MultipartUpload(
                        upload["Key"], upload["UploadId"], upload["Initiated"].timestamp()
                    )
                )
    ctx.report.count_listed("multipart_uploads", len(inventory.multipart))
    _read_states(ctx, inventory)


def _read_states(ctx: GcContext, inventory: Inventory) -> None:
    open_multipart = {upload.upload_id: upload.key for upload in inventory.multipart}
    states = [(token, u.state_key) for token, u in inventory.uploads.items() if u.state_key]
    facts = ctx.map(lambda item: _state_facts(ctx, *item, open_multipart), states)
    for _, entries in facts:
        inventory.upload_entries |= entries
    if any(data_key is None for data_key, _ in facts):
        ctx.report.warn("an upload state names no data key: orphaned data is not swept")
        inventory.upload_data_keys = None
    else:
        inventory.upload_data_keys = {data_key for data_key, _ in facts if data_key}


def upload_entries_since(ctx: GcContext, inventory: Inventory) -> set[str]:
    """The entries named by upload states written since the first listing (a close()
    may save a short blob as its own entry, unlinked until the commit)."""
    changed = []

    def on_page(items: list[dict[str, Any]]) -> None:
        for item in items:
            token = ctx.paths.upload_token_of(item["Key"])
            if token is None or item["Key"] != ctx.paths.upload_state(token):
                continue
            before = inventory.uploads.get(token)
            if before is None or item["LastModified"].timestamp() >= before.newest:
                changed.append((token, item["Key"]))

    ctx.list_prefixes([ctx.paths.uploads_root], on_page, "listing uploads")
    facts = ctx.map(lambda item: _state_facts(ctx, *item, {}), changed)
    return {entry for _, entries in facts for entry in entries}


def _state_facts(
    ctx: GcContext, token: str, key: str, open_multipart: dict[str, str]
) -> tuple[str | None, set[str]]:
    """What an upload state says gc must keep: its data key (None when it cannot be
    told; '' for a state gone since the listing) and the entries of its pieces.
    Only the fields every version of the writer has are relied on."""
    try:
        with s3_errors("reading an upload state", not_found=_Gone):
            raw = ctx.client.get_object(Bucket=ctx.bucket, Key=key)["Body"].read()
    except _Gone:  # finished since the listing: its entry is written by now
        return "", set()
    try:
        state = UploadState.from_json(raw)
        return state.data_key, {piece.entry for piece in state.pieces if piece.entry}
    except (ValueError, KeyError, TypeError):
        pass
    data_key: str | None = None
    entries: set[str] = set()
    try:  # a state of another version of the writer: what it says, if it says it
        data = json.loads(raw)
        if isinstance(data.get("data_key"), str):
            data_key = data["data_key"]
        for piece in data.get("pieces") or ():
            if isinstance(piece, list) and len(piece) > 2 and isinstance(piece[2], str):
                entries.add(piece[2])
    except (ValueError, AttributeError, TypeError):
        pass
    if data_key is None:  # or the open multipart upload whose id the writer id carries
        with contextlib.suppress(BlobUploadUnknown):
            data_key = open_multipart.get(upload_id_of(token))
    return data_key, {entry for entry in entries if entry}


def list_entries(ctx: GcContext, inventory: Inventory) -> None:
    """Every entry, over the fan-out: 16 prefixes per digest algorithm in use."""
    paths = ctx.paths
    with s3_errors("listing blobs"):
        page = ctx.client.list_objects_v2(Bucket=ctx.bucket, Prefix=paths.blobs_root, Delimiter="/")
    algorithms = [p["Prefix"] for p in page.get("CommonPrefixes", ())]
    prefixes = [f"{root}{digit}" for root in algorithms for digit in "0123456789abcdef"]
    lock = threading.Lock()
    phase = ctx.progress.phase("listing entries")

    def on_page(items: list[dict[str, Any]]) -> None:
        found = []
        for item in items:
            digest = paths.digest_of_blob_key(item["Key"])
            if digest is not None:
                entry = Entry(int(item["Size"]), item["LastModified"].timestamp())
                found.append((sys.intern(digest), entry))
        with lock:
            inventory.entries.update(found)
        ctx.report.count_listed("entries", len(found))
        phase.update(len(items))

    with phase:
        ctx.list_prefixes(prefixes, on_page, "listing blobs")


def list_data(ctx: GcContext, inventory: Inventory) -> None:
    lock = threading.Lock()

    def on_page(items: list[dict[str, Any]]) -> None:
        with lock:
            for item in items:
                inventory.data[item["Key"]] = Entry(
                    int(item["Size"]), item["LastModified"].timestamp()
                )
        ctx.report.count_listed("data", len(items))

    ctx.list_prefixes([ctx.paths.data_root], on_page, "listing data objects")


def list_repositories(
    ctx: GcContext, watch: frozenset[str] = frozenset(), again: bool = False
) -> RepositoryListing:
    """One pass over ``repositories/``, in ranges listed side by side. The link keys
    of digests in ``watch`` are kept. The report counts what the first pass (not
    ``again``) listed."""
    listing = RepositoryListing(watch=watch)
    lock = threading.Lock()
    phase = ctx.progress.phase("re-reading repositories" if again else "listing repositories")
    parse = ctx.paths.parse_repository_key
    plural = {"link": "links", "revision": "revisions", "tag": "tags", "referrer": "referrers"}

    def on_page(items: list[dict[str, Any]]) -> None:
        parsed = [(key, item) for item in items if (key := parse(item["Key"])) is not None]
        with lock:
            for key, item in parsed:
                _take(listing, key, item)
        if not again:
            for key, _ in parsed:
                ctx.report.count_listed(plural[key.kind])
        phase.update(len(items))

    with phase:
        ctx.list_ranges(_repository_ranges(ctx), on_page, "listing repositories")
    return listing


def _repository_ranges(ctx: GcContext) -> list[KeyRange]:
    """``repositories/`` cut into at most ``MAX_RANGES`` ranges of consecutive first
    components of names (``library/``, ``team3/``...), listed side by side: one
    listing by ``/`` tells them (a page per 1,000 components)."""
    root = ctx.paths.repositories_root
    components: list[str] = []
    with s3_errors("listing repositories"):
        pages = ctx.client.get_paginator("list_objects_v2").paginate(
            Bucket=ctx.bucket, Prefix=root, Delimiter="/"
        )
        for page in pages:
            components += [p["Prefix"] for p in page.get("CommonPrefixes", ())]
    if not components:
        return [KeyRange(root)]
    step = -(-len(components) // MAX_RANGES)
    firsts = components[::step]
    # A range starts after every key of the components before it: the first component
    # with its '/' turned into ".~" sorts after "<name>.<anything>/" and "<name>-...",
    # and before "<name>/..." (names are [a-z0-9._-] components joined by '/').
    return [
        KeyRange(
            root,
            start_after=first[:-1] + ".~" if i else "",
            end=firsts[i + 1] if i + 1 < len(firsts) else "",
        )
        for i, first in enumerate(firsts)
    ]


def _take(listing: RepositoryListing, key: RepositoryKey, item: dict[str, Any]) -> None:
    kind = key.kind
    modified = item["LastModified"].timestamp()
    name = sys.intern(key.name)
    if kind == "link":
        digest = sys.intern(key.digest)
        listing.newest_link[digest] = max(modified, listing.newest_link.get(digest, 0.0))
        if digest in listing.watch:
            listing.watched_links[digest].append(item["Key"])
    elif kind == "revision":
        listing.revisions[name][sys.intern(key.digest)] = modified
    elif kind == "tag":
        listing.tags[name].append((key.tag, item["ETag"].strip('"')))
    elif kind == "referrer":
        listing.referrers[name].append((sys.intern(key.subject), sys.intern(key.digest)))


def run_side_by_side(*steps: Callable[[], None]) -> None:
    """Run ``steps`` at once, each on a thread of its own (their listings share the
    pool: a step never waits on the pool from inside it); the first error is raised."""
    failures: list[list[BaseException]] = [[] for _ in steps]
    threads = [
        threading.Thread(target=_capture, args=(step, caught), daemon=True)
        for step, caught in zip(steps, failures, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for caught in failures:
        if caught:
            raise caught[0]


def _capture(step: Callable[[], None], caught: list[BaseException]) -> None:
    try:
        step()
    except BaseException as exc:
        caught.append(exc)


class _Gone(Exception):
    pass
