"""Registry garbage collection, online: ``collect_garbage(storage)``, ``s3blobs gc``.

What goes
---------
Every manifest revision of every repository is kept (with ``delete_untagged``, only
those a tag reaches, those younger than the grace, and the referrers of kept ones;
the rest are deleted first, with their referrer entries), and with it everything it
names: config, layers, the manifests of an index recursively. A blob entry nothing
kept names goes, with every repository link to it and the ``data/`` object it names,
once its entry is older than the grace ``G`` and every link to it older than
``G + R``, where ``R`` (half of ``S3BLOBS_GC_GRACE``) is how old a link may grow
before the registry refreshes it. Then what nobody can reach: data objects no entry
names (``orphans``), and uploads untouched for ``uploads_older_than`` (``uploads``).

How it stays safe while pushes go on
------------------------------------
gc, in this order (``T0``: the start; ``L1``, ``L2``: listings of ``repositories/``):

1. list uploads and their states, then entries, repositories (``L1``) and data;
2. mark from ``L1``; the candidates are what the rule above lets go;
3. publish the candidates as the *fence* (:mod:`s3blobs.fence`), then wait longer
   than any process keeps its copy of the fence (``settle`` > ``FENCE_TTL``);
4. list the repositories again (``L2``): a candidate with a link younger than
   ``G + R``, or named by a revision written since ``L1`` (marked the same way), is
   spared;
5. delete the links of the rest (as ``L2`` found them), then their entries (only
   where every link went), then their data; lift the fence.

The registry, in :mod:`s3blobs.repository` and ``registry/manifests.py``:

* *link* (a commit, a ``put``, a mount): read the fence, write the link, read the
  fence again; if the blob is fenced, refuse (429, retry; a mount becomes an upload).
* *confirm* (blob HEAD and GET): know the link's age (from this process's memory of
  its last LastModified, else one HeadObject); if it is older than ``R``, rewrite it
  (conditionally: never re-creating a deleted link) and read the entry from S3; then
  read the fence. A fenced blob is answered 404.
* *manifest PUT*: every blob it names must have a link in S3 (listed) and an entry
  (in S3, or proven by an *accepted link*, below); read the fence, write the
  revision, read the fence again; if anything it names is fenced, take the revision
  back and refuse (429) before any tag moves. The same manifest under the same tag
  (revision and tag in S3) is written no more: a tagged revision is kept, and with
  it what it names. A *mount* reads the source's link in S3, and its entry unless
  the source's link is an accepted one.
* *accepted link*: one this process wrote less than ``R`` ago, for an entry it had
  just written or read, and then read the fence after without finding the blob on
  it (``RepositoryBlobStore.linked_recently``). By (b) below no run deletes that
  entry for ``G + R`` after the write while the link stays, so for ``R`` the process
  takes the entry as there without asking S3.

Why nothing needed is deleted. Reads of S3 see every write that finished before they
began. A process's copy of the fence is at most ``FENCE_TTL`` old, counted from before
its GET. Let ``P`` be when the fence went up; ``L2`` starts after ``P + settle``.

* A write (link, refresh, revision) that reads no fence after it happened either
  before ``L2`` (else its copy, fetched less than ``FENCE_TTL`` before the read that
  followed the write, would be from after ``P``), so ``L2`` sees it and gc spares the
  blob; or its blob is not a candidate. Reading the fence after the write is what
  makes one of the two see the other, as in Dekker's mutual exclusion.
* (a) A manifest accepted before ``L2`` has its revision in ``L2``: what it names is
  marked. One accepted later read the fence after writing its revision and was not
  refused, so nothing it names is fenced.
* (b) A commit, link or mount within the grace wrote an entry (younger than ``G``: not
  a candidate) or a link (seen by ``L2`` younger than ``G + R``, or refused).
* (c) A blob confirmed at ``t`` has a link last written at ``t - R`` or later (young
  enough: no write; or rewritten at ``t``). A run that deletes it within ``G`` of ``t``
  started after ``t - G``; the link is younger than ``G + R`` at its ``L2`` unless the
  confirmation came after ``L2``, when it would have read the fence and answered 404.
  So a client that checked a blob, skipped its upload and PUTs its manifest within
  the grace succeeds.

The descriptor cache (:mod:`s3blobs.cache`, in memory or shared in Redis) answers
``stat`` without S3. A cached "exists" is no proof that gc has not deleted the blob
since: the proof above rests on the link's age, which a cache hit does not show, and
gc does not go through the caches. So ``confirm`` answers from a cached descriptor
only while the link is known to be younger than ``R`` (from this process's last sight
of it, or one HeadObject: a LastModified only grows while a link exists, and gc
deletes only links older than ``G + R``), and otherwise rewrites the link and reads
the entry from S3. What is answered from a cache without ``confirm`` (a library
``stat``, a retried upload PUT), or from a link a refused write left behind, may say
"exists" for up to the cache TTL after gc deleted the blob; so the grace may not be
shorter than that TTL (``check_grace``), and the manifest PUT asks S3 for every link
and every entry it has no proof of, so a re-push of the same content works at once
after a deletion. An accepted link is such a proof because gc deletes links older
than ``G + R`` only, and entries only once every link went: it holds for a link a
client did not delete meanwhile (a deletion of it the manifest PUT sees, by listing
the links).

What is assumed: the clocks of S3 and of every process agree within a small part of
the grace (LastModified is S3's; ages and the fence's expiry are read locally), and a
request (a manifest PUT between its checks and its revision) takes less than ``G``.
A link written by a request that the fence then refuses stays, naming a blob that is
going: the manifest PUT and every uncached read check the entry behind a link, and
the next run removes it. An open upload that saved a short blob as its own entry
keeps that entry while the upload lives (its state names it); a state written during
the deletes that names an entry being deleted is not seen, and its commit then fails
cleanly (BlobUploadUnknown: the client uploads again). If
gc dies, its fence expires within ``s3blobs.fence.LEASE``; blobs it had fenced are
refused meanwhile, and nothing is half-deleted that matters (links go before entries,
entries before data).

Cost: listings of about one request per 1,000 objects (entries over 16 prefixes per
algorithm, repositories over 36, both twice), one GET per distinct manifest, one
HeadObject per swept blob stored in parts (and per such blob when orphaned data may
exist), one DeleteObjects per 1,000 deletions. Memory grows with distinct digests,
manifest revisions and data objects, not with objects read.
"""

from __future__ import annotations

from .collector import (
    DEFAULT_UPLOADS_OLDER_THAN,
    DEFAULT_WORKERS,
    check_grace,
    collect_garbage,
)
from .report import GcReport, Tally

__all__ = [
    "DEFAULT_UPLOADS_OLDER_THAN",
    "DEFAULT_WORKERS",
    "GcReport",
    "Tally",
    "check_grace",
    "collect_garbage",
]
