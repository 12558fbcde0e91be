"""Data objects that no entry names: a commit that died between completing its upload
and writing its entry, or the loser of two commits of one digest.

A data object goes when it is older than the grace (by its key's time and by its
LastModified), no entry names it, and no open upload's state names it (a commit in
progress completes its data object before it writes the entry). Entries name their
data only in metadata, so knowing what they name costs a HeadObject per blob stored in
parts; that is skipped when the count shows there is nothing to find: every old
pointer entry names a distinct old data object, so when the old data objects are no
more than the old pointer entries, none is an orphan (short of an entry naming data
that was lost, which the next run sees again).
"""

from __future__ import annotations

from .context import GcContext
from .listing import Inventory
from .sweep import Pointed, is_pointer


def sweep_orphaned_data(
    ctx: GcContext, inventory: Inventory, pointed: Pointed, already_deleted: set[str]
) -> None:
    if inventory.upload_data_keys is None:
        return  # an upload state that names no data key: nothing can be proven unnamed
    paths, cutoff = ctx.paths, ctx.entry_cutoff
    known = pointed.named() | inventory.upload_data_keys | already_deleted
    eligible = {}
    for key, data in inventory.data.items():
        created = paths.data_created_at(key)
        if (
            key not in known
            and ctx.older(data.modified, cutoff)
            and (created is None or ctx.older(created.timestamp(), cutoff))
        ):
            eligible[key] = data
    if not eligible:
        return
    unread = {
        digest
        for digest, entry in inventory.entries.items()
        if is_pointer(digest, entry.size) and digest not in pointed.data
    }
    old_unread = sum(1 for d in unread if ctx.older(inventory.entries[d].modified, cutoff))
    if len(eligible) <= old_unread:
        return
    pointed.head_all(ctx, unread)
    orphans = sorted(set(eligible) - pointed.named())
    failed = ctx.delete(orphans, "deleting orphaned data")
    for key in orphans:
        if key not in failed:
            ctx.report.delete("orphaned_data", 1, eligible[key].size)
