"""The OCI distribution API (v1.1) as a WSGI application on s3blobs.

Stateless: an upload's Location carries its writer id, and every request resumes
the writer from S3, so any number of processes (or machines) can serve one registry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from werkzeug.datastructures import Headers
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import get_input_stream

from ..cache_backend import caches_from_config, memory_manifest_cache
from ..caches import ValueCache
from ..config import MIN_PART_SIZE, Config
from ..descriptor import Descriptor
from ..digests import check_algorithm, parse_digest
from ..errors import (
    BlobError,
    BlobInvalidDigest,
    BlobMounted,
    BlobUnknown,
    BlobUploadClosed,
    BlobUploadUnknown,
)
from ..names import validate_repository_name
from ..paths import is_valid_tag
from ..repository import RepositoryBlobStore
from ..serving import head_response
from ..storage import S3BlobStorage
from ..writer import S3BlobWriter
from .auth.settings import SecuritySettings
from .auth.wsgi import Authentication, Authorization
from .catalog import catalog
from .context import REQUEST_ID_ADDED, REQUEST_ID_HEADER, request_id
from .errors import (
    API_VERSION,
    RegistryError,
    digest_invalid,
    name_unknown,
    translate,
    upload_invalid,
)
from .events import Notifier
from .hardening import SecurityHeaders, WSGIApp
from .health import HealthCheck, HealthEndpoint
from .logformat import install_logging
from .manifests import Manifests
from .metrics import RegistryMetrics, serve_metrics
from .pagination import next_link, page_size, page_start
from .proxies import BehindProxies, trusted_proxies
from .requestlog import RequestLog
from .routes import match_route
from .settings import OperationsSettings

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d+)-(\d+)(?:/\d+|/\*)?")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
BODY_READ = 256 * 1024


class RegistryApp:
    """``RegistryApp(storage)`` is a WSGI application serving the registry API."""

    def __init__(
        self,
        storage: S3BlobStorage,
        manifest_cache: ValueCache[tuple[str, bytes]] | None = None,
    ) -> None:
        self.storage = storage
        self.manifest_cache = (
            manifest_cache if manifest_cache is not None else memory_manifest_cache()
        )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        # Not kept in the environ as werkzeug would ("werkzeug.request"): that makes a
        # reference cycle (environ, request, environ) of every request, left for the
        # cyclic garbage collector (a full collection of a worker's heap is milliseconds).
        request = Request(environ, populate_request=False)
        rid = request_id(environ)
        try:
            response = self.dispatch(request)
        except RegistryError as exc:
            response = exc.response(request.method)
        except Exception as exc:
            error = translate(exc, rid)
            if error is None:
                log.exception("request %s: unexpected error on %s", rid, request.method)
                error = RegistryError("UNKNOWN", 500, "internal error", {"requestId": rid})
            elif error.status >= 500 or error.status == 429:
                # The cause names S3 internals (endpoint, bucket, keys): the log only.
                log.warning("request %s: %s", rid, exc)
            response = error.response(request.method)
        for header, value in API_VERSION.items():
            response.headers.setdefault(header, value)
        if REQUEST_ID_ADDED not in environ:
            response.headers.add(REQUEST_ID_HEADER, rid)  # no answer has one: not set()
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        """The handler ``<route>_<method>`` for the methods the route table lists."""
        matched = match_route(request.environ)
        if matched is None:
            raise RegistryError("NOT_FOUND", 404, "no such endpoint", request.path)
        if matched.repository is not None:
            validate_repository_name(matched.repository)
        if matched.need(request.method) is None:
            raise RegistryError("UNSUPPORTED", 405, f"{request.method} not supported here")
        handler = getattr(self, f"{matched.route.name}_{request.method.lower()}")
        result: Response = handler(request, **matched.params)
        return result

    # /v2/ ------------------------------------------------------------------------------

    def base_get(self, request: Request) -> Response:
        return Response(b"{}", content_type="application/json")

    base_head = base_get

    def catalog_get(self, request: Request) -> Response:
        return catalog(self.storage, request)

    # Blobs ------------------------------------------------------------------------------

    def blob_get(self, request: Request, name: str, digest: str) -> Response:
        return self.repo(name).serve_blob(request.environ, digest)

    blob_head = blob_get

    def blob_delete(self, request: Request, name: str, digest: str) -> Response:
        self.repo(name).delete(digest)
        return Response(b"", status=202)

    # Uploads ----------------------------------------------------------------------------

    def uploads_post(self, request: Request, name: str) -> Response:
        repo = self.repo(name)
        mount, source = request.args.get("mount"), request.args.get("from")
        digest = request.args.get("digest")
        algorithm = check_algorithm(request.args.get("digest-algorithm", "sha256"))
        if digest is not None:
            algorithm = parse_digest(digest).algorithm
            size = request.content_length
            if size is not None and size <= self.storage.config.part_size:
                return self.monolithic(name, request, digest, size)
        try:
            writer = repo.create(
                mount_from=f"{source}@{mount}" if mount and source else None,
                digest_algorithm=algorithm,
            )
        except BlobMounted as mounted:
            return self.created(name, mounted.descriptor.digest)
        if digest is None:
            writer.close()
            response = self.accepted(name, writer)
            # Chunks shorter than this are kept aside and sent to S3 a second time.
            config = self.storage.config
            chunk = MIN_PART_SIZE if not config.equal_parts else config.part_size
            response.headers["OCI-Chunk-Min-Length"] = str(chunk)
            return response
        try:
            return self.finish(name, writer, request, digest)
        except Exception:
            writer.cancel()  # the client never saw this upload: leave nothing behind
            raise

    def monolithic(self, name: str, request: Request, digest: str, size: int) -> Response:
        """``POST ?digest=`` of up to one part: a put, with no multipart upload at all."""
        body = read_body(request, size)
        if len(body) != size:
            raise upload_invalid("the request body ended early")
        expected = parse_digest(digest)
        if hashlib.new(expected.algorithm, body).hexdigest() != expected.hex:
            raise BlobInvalidDigest(digest, "content does not match")
        descriptor = self.repo(name).put(
            "application/octet-stream", body, digest_algorithm=expected.algorithm
        )
        return self.created(name, descriptor.digest)

    def upload_get(self, request: Request, name: str, upload: str) -> Response:
        writer = self.repo(name).resume(upload)
        return self.accepted(name, writer, status=204)

    def upload_patch(self, request: Request, name: str, upload: str) -> Response:
        writer = self.repo(name).resume(upload)
        if writer.committing:
            raise BlobUploadClosed(f"upload {upload[:100]} is being committed")
        self.receive(writer, request, name)
        writer.close()
        return self.accepted(name, writer)

    def upload_put(self, request: Request, name: str, upload: str) -> Response:
        repo = self.repo(name)
        digest = request.args.get("digest")
        if not digest:
            raise digest_invalid("PUT needs ?digest=")
        parse_digest(digest)
        try:
            writer = repo.resume(upload)
        except BlobUploadUnknown:
            # A retried PUT whose first answer was lost: the blob is already here.
            try:
                repo.stat(digest)
            except BlobUnknown:
                raise BlobUploadUnknown(upload[:100]) from None
            return self.created(name, digest)
        return self.finish(name, writer, request, digest)

    def upload_delete(self, request: Request, name: str, upload: str) -> Response:
        self.repo(name).resume(upload).cancel()
        return Response(b"", status=204)

    def finish(self, name: str, writer: S3BlobWriter, request: Request, digest: str) -> Response:
        """Take the request's body (the last chunk, or the whole blob) and commit.

        An upload that a commit already sealed holds every byte: a retried PUT only
        finishes that commit, and its body (sent again) is not appended twice."""
        if not writer.committing:
            self.receive(writer, request, name)
        try:
            descriptor = writer.commit(Descriptor("application/octet-stream", writer.size, digest))
        except BlobError:
            try:
                writer.close()  # keep what arrived: the upload stays resumable
            except BlobError as exc:
                log.warning(
                    "request %s: could not save the upload: %s", request_id(request.environ), exc
                )
            raise
        return self.created(name, descriptor.digest)

    def receive(self, writer: S3BlobWriter, request: Request, name: str) -> None:
        """Append the request body; a Content-Range must start where the upload ends."""
        content_range = request.headers.get("Content-Range")
        if content_range:
            match = _CONTENT_RANGE.fullmatch(content_range.strip())
            if not match:
                raise upload_invalid(f"malformed Content-Range {content_range[:100]!r}")
            start, end = int(match.group(1)), int(match.group(2))
            if start != writer.size or end < start:
                raise RegistryError(
                    "BLOB_UPLOAD_INVALID",
                    416,
                    "chunk out of order",
                    f"upload has {writer.size} bytes; chunk starts at {start}",
                    self.upload_headers(name, writer),
                )
            if request.content_length is not None and request.content_length != end - start + 1:
                raise upload_invalid("Content-Length does not match Content-Range")
        stream = get_input_stream(request.environ, max_content_length=None)
        received = 0
        while chunk := read_some(stream, BODY_READ):
            received += writer.write(chunk)
        if chunk is None or request.content_length not in (None, received):
            writer.close()  # keep what arrived; the client can ask for the Range
            raise upload_invalid("the request body ended early")

    # Manifests, tags, referrers ------------------------------------------------------------

    def manifest_put(self, request: Request, name: str, reference: str) -> Response:
        body = read_body(request, 4 * 1024 * 1024 + 1)
        digest, subject = self.manifests(name).put(reference, request.content_type or "", body)
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        if subject:
            headers["OCI-Subject"] = subject
        return Response(b"", status=201, headers=headers)

    def manifest_get(self, request: Request, name: str, reference: str) -> Response:
        digest, media_type, body = self.manifests(name).get(reference)
        headers = Headers({"Docker-Content-Digest": digest})
        if request.method == "HEAD":
            return head_response(headers, len(body), media_type)
        return Response(body, headers=headers, content_type=media_type)

    manifest_head = manifest_get

    def manifest_delete(self, request: Request, name: str, reference: str) -> Response:
        self.manifests(name).delete(reference)
        return Response(b"", status=202)

    def tags_get(self, request: Request, name: str) -> Response:
        manifests = self.manifests(name)
        n = page_size(request.args)
        last = page_start(request.args, is_valid_tag, "TAG_INVALID", "tag")
        tags, more = manifests.tags(n, last)
        if not tags and not last and not manifests.repository_exists():
            raise name_unknown(name)
        headers = {"Link": next_link(f"/v2/{name}/tags/list", n, tags[-1])} if more and tags else {}
        body = json.dumps({"name": name, "tags": tags}).encode()
        return Response(body, headers=headers, content_type="application/json")

    def referrers_get(self, request: Request, name: str, digest: str) -> Response:
        artifact_type = request.args.get("artifactType")
        found = self.manifests(name).referrers(parse_digest(digest), artifact_type)
        headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}
        return Response(json.dumps(body).encode(), headers=headers, content_type=OCI_INDEX)

    # Helpers -------------------------------------------------------------------------------

    def repo(self, name: str) -> RepositoryBlobStore:
        return self.storage.repository(name)

    def manifests(self, name: str) -> Manifests:
        return Manifests(self.storage, name, self.manifest_cache)

    def upload_headers(self, name: str, writer: S3BlobWriter) -> dict[str, str]:
        return {
            "Location": f"/v2/{name}/blobs/uploads/{quote(writer.id)}",
            "Range": f"0-{max(writer.size - 1, 0)}",
            "Docker-Upload-UUID": writer.id,
        }

    def accepted(self, name: str, writer: S3BlobWriter, status: int = 202) -> Response:
        return Response(b"", status=status, headers=self.upload_headers(name, writer))

    def created(self, name: str, digest: str) -> Response:
        headers = {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest}
        return Response(b"", status=201, headers=headers)


def read_some(stream: Any, size: int) -> bytes | None:
    """Up to ``size`` bytes of a request body; b"" at its end, None when it broke off.

    A body can break in as many ways as there are servers (werkzeug's OSError for a
    bad chunk header, gunicorn's parse errors, a read timeout): whatever the server
    raises while reading is the client's connection failing, never the registry's.
    What one read had taken in when it failed is lost with it, so reads are small
    enough (BODY_READ) for a client that continues from the Range to resend little.
    """
    try:
        return bytes(stream.read(size))
    except Exception:
        return None


def read_body(request: Request, limit: int) -> bytes:
    """Up to ``limit`` bytes of the request's body; a body cut short is the client's
    error (400), not the server's."""
    body = read_some(get_input_stream(request.environ, max_content_length=None), limit)
    if body is None:
        raise upload_invalid("the request body ended early")
    return body


def make_app(
    storage: S3BlobStorage,
    security: SecuritySettings | None = None,
    manifest_cache: ValueCache[tuple[str, bytes]] | None = None,
    *,
    operations: OperationsSettings | None = None,
    health: HealthCheck | None = None,
    notifier: Notifier | None = None,
) -> WSGIApp:
    """The registry's WSGI pipeline, outermost first: the request id and access log
    (metrics and events observe each finished request), security headers and input
    checks, ``/healthz`` (it needs no credentials), authentication (who), routing and
    authorization (may they, by the route table), the handlers. ``security`` defaults
    to an open registry, as ``RegistryApp(storage)``; ``operations`` to a text log and
    no events; ``health`` and ``notifier`` replace the ones it describes (tests tune
    their timings)."""
    security = security or SecuritySettings()
    operations = operations or OperationsSettings()
    notifier = notifier or Notifier.from_settings(operations, storage)
    observers = [RegistryMetrics(storage).observe]
    if notifier is not None:
        observers.append(notifier.observe)
    app: WSGIApp = RegistryApp(storage, manifest_cache)
    app = Authorization(app, security.access, security.authenticator)
    app = Authentication(app, security.authenticator)
    app = HealthEndpoint(app, health or HealthCheck(storage.config))
    app = SecurityHeaders(app)
    return RequestLog(app, observers)


def create_app(
    environ: Mapping[str, str] | None = None,
    security: SecuritySettings | None = None,
    *,
    client: Any = None,
) -> WSGIApp:
    """The app configured from ``S3BLOBS_*`` (for gunicorn: ``s3blobs.registry:create_app()``):
    security and operations settings first (they need no S3), logging installed, the
    caches where ``S3BLOBS_CACHE`` says, the metrics listener where
    ``S3BLOBS_METRICS_ADDR`` says, all behind ``S3BLOBS_TRUSTED_PROXIES`` (outermost,
    so the log and events see the client's address). ``client``: an S3 client to use
    instead of a new one (``serve --data`` passes its single-owner client)."""
    security = security or SecuritySettings.from_env(environ)
    operations = OperationsSettings.from_env(environ)
    config = Config.from_env(environ)
    install_logging(operations)
    caches = caches_from_config(config)
    storage = S3BlobStorage(
        config, caches.descriptors, location_cache=caches.locations, client=client
    )
    if operations.metrics_addr is not None:
        serve_metrics(operations.metrics_addr)
    app = make_app(storage, security, caches.manifests, operations=operations)
    return BehindProxies(app, trusted_proxies(environ))
