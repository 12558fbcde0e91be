"""Stale uploads: upload objects and multipart uploads nobody has touched for a while.

An upload (its state and pieces under ``_uploads/<writer id>/``) is stale when the
newest of its objects is older than ``uploads_older_than``; its objects are deleted and
its multipart upload aborted. The writer id is S3's upload id in URL-safe base64, and
the listing of multipart uploads gives that upload's key, so nothing here reads a
state: whatever the writer keeps in it, only the key layout matters.

A multipart upload under ``data/`` with no upload objects at all (its creation's answer
was lost, or the process died before writing its state) is aborted once older than
that too. Its age comes from its key, which carries its creation time: ``Initiated``
is not reliable everywhere (moto reports 2010 for every upload), and is used only for
keys without a time.
"""

from __future__ import annotations

from ..errors import BlobUploadUnknown
from ..s3 import s3_errors
from ..uploads import upload_id_of, writer_id
from .context import GcContext
from .listing import Inventory, MultipartUpload


def sweep_stale_uploads(ctx: GcContext, inventory: Inventory, older_than: float) -> None:
    cutoff = ctx.started - older_than
    open_by_id = {upload.upload_id: upload for upload in inventory.multipart}
    keys: list[str] = []
    aborts: list[MultipartUpload] = []
    for token, upload in sorted(inventory.uploads.items()):
        if not ctx.older(upload.newest, cutoff):
            continue
        keys += upload.keys
        ctx.report.delete("uploads", 1, upload.bytes)
        try:
            multipart = open_by_id.get(upload_id_of(token))
        except BlobUploadUnknown:
            multipart = None
        if multipart is not None:
            aborts.append(multipart)
    for multipart in inventory.multipart:
        if writer_id(multipart.upload_id) in inventory.uploads:
            continue  # an upload with a state: decided above, by its objects' age
        created = ctx.paths.data_created_at(multipart.key)
        age = created.timestamp() if created is not None else multipart.initiated
        if ctx.older(age, cutoff):
            aborts.append(multipart)
    ctx.report.delete("multipart_uploads", len(aborts))
    if ctx.dry_run:
        return
    # The multipart uploads first: a state left by a crash in between is harmless (a
    # resume answers BlobUploadUnknown) and stale at the next run.
    ctx.run_all(lambda multipart: _abort(ctx, multipart), aborts)
    ctx.delete(keys, "deleting stale uploads")


def _abort(ctx: GcContext, multipart: MultipartUpload) -> None:
    try:
        with s3_errors("aborting a stale upload", not_found=_Gone):
            ctx.client.abort_multipart_upload(
                Bucket=ctx.bucket, Key=multipart.key, UploadId=multipart.upload_id
            )
    except _Gone:  # finished or aborted meanwhile
        pass


class _Gone(Exception):
    pass
