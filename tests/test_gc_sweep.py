"""gc's sweep: an unreferenced old blob goes with every link to it and its data object;
orphaned data goes; young links keep a blob; the fence makes requests back off; a blob
confirmed while gc runs is spared by the re-read."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

import s3blobs.s3
from conftest import BUCKET, PART, all_keys
from gcsupport import Registry, age, digest_of, gc_config, has_entry
from s3blobs import S3BlobStorage
from s3blobs.fence import SweepFence


def data_keys(s3: Any) -> set[str]:
    return {key for key in all_keys(s3) if key.startswith("data/")}


def test_a_blob_goes_with_its_links_and_data(s3: Any) -> None:
    storage = S3BlobStorage(gc_config(BUCKET))
    registry = Registry(storage)
    kept_layer = os.urandom(PART + 1)
    image, image_blobs, _ = registry.image("team/app", "v1", [kept_layer])
    big = storage.repository("team/app").put("application/octet-stream", os.urandom(PART + 2))
    for repository in ("team/copy", "team/third"):  # mounted: linked, not uploaded again
        mounted = registry.client.post(
            f"/v2/{repository}/blobs/uploads/",
            query_string={"mount": big.digest, "from": "team/app"},
        )
        assert mounted.status_code == 201
    small = registry.blob("team/app", b"small and unused")
    relinked = registry.blob("team/app", b"unused, but mounted again later")
    in_use = data_keys(s3)
    assert len(in_use) == 2
    orphan = storage.paths.new_data_key()  # a commit that died before its entry
    s3.put_object(Bucket=BUCKET, Key=orphan, Body=b"unreachable")
    age()
    dry = storage.collect_garbage(settle=0, progress=False, dry_run=True)
    assert dry.deleted["blobs"].count == 3 and dry.deleted["links"].count == 5
    assert dry.deleted["orphaned_data"].count == 1
    assert orphan in data_keys(s3) and has_entry(s3, BUCKET, big.digest)  # nothing went

    time.sleep(1.0)  # older than the second run's grace of 1s, but for this:
    mounted = registry.client.post(
        "/v2/team/fresh/blobs/uploads/", query_string={"mount": relinked, "from": "team/app"}
    )
    assert mounted.status_code == 201  # a young link keeps the blob
    report = storage.collect_garbage(grace=1.0, settle=0, progress=False)

    assert report.deleted["blobs"].count == 2
    assert report.deleted["blobs"].bytes == big.size + len(b"small and unused")
    assert report.deleted["links"].count == 4  # big in three repositories, small in one
    assert report.deleted["orphaned_data"].count == 1
    for repository in ("team/app", "team/copy", "team/third"):
        assert not registry.exists(repository, big.digest)
    assert not has_entry(s3, BUCKET, big.digest) and not has_entry(s3, BUCKET, small)
    assert len(data_keys(s3)) == 1 and orphan not in data_keys(s3)
    assert registry.exists("team/app", relinked) and registry.exists("team/fresh", relinked)
    assert storage.repository("team/app").get(image_blobs[1]) == kept_layer
    assert registry.manifest_exists("team/app", image)
    # The fence went up and came down.
    assert not [key for key in all_keys(s3) if key.startswith("_gc/")]


def test_the_fence_makes_requests_back_off(s3: Any) -> None:
    storage = S3BlobStorage(gc_config(BUCKET))
    storage.fence.ttl = 0  # this process reads the fence at every check
    registry = Registry(storage)
    doomed = registry.blob("team/app", b"a blob gc is deleting")
    _, other_blobs, _ = registry.image("team/app", "v1", [b"a layer"])
    fence = SweepFence(s3, BUCKET, storage.paths)
    lease = fence.publish([doomed], lambda function, items: [function(i) for i in items])
    try:
        assert not registry.exists("team/app", doomed)  # confirm: 404
        pushed = registry.client.post(
            "/v2/team/other/blobs/uploads/",
            query_string={"digest": doomed},
            data=b"a blob gc is deleting",
        )
        assert pushed.status_code == 429 and pushed.headers["Retry-After"]
        mount = registry.client.post(
            "/v2/team/other/blobs/uploads/", query_string={"mount": doomed, "from": "team/app"}
        )
        assert mount.status_code == 202  # an upload instead of a mount
        config = b'{"uses": "the doomed blob"}'
        registry.blob("team/app", config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "x/config", "size": len(config), "digest": digest_of(config)},
            "layers": [{"mediaType": "x/layer", "size": 21, "digest": doomed}],
        }
        status, digest = registry.manifest("team/app", "v2", manifest)
        assert status == 429
        assert not registry.manifest_exists("team/app", digest)
        assert registry.exists("team/app", other_blobs[0])  # what is not fenced is served
    finally:
        lease.lift()
    assert registry.exists("team/app", doomed)
    assert registry.manifest("team/app", "v2", manifest)[0] == 201


def test_a_blob_confirmed_while_gc_runs_is_spared(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    registry_storage = S3BlobStorage(gc_config(BUCKET))
    registry_storage.fence.ttl = 0
    registry = Registry(registry_storage)
    wanted = registry.blob("team/app", b"old, unused, then pulled again")
    unwanted = registry.blob("team/app", b"old, unused, left alone")
    age()
    answers: list[bool] = []

    def confirm_before_the_fence(params: Any, **_: Any) -> None:
        # gc has listed and marked; a client checks the blob just before the fence goes
        # up: the registry refreshes its old link, and gc's second listing sees it.
        if params.get("Key") == "_gc/fence" and not answers:
            answers.append(registry.exists("team/app", wanted))

    make_client = s3blobs.s3.make_client

    def hooked(config: Any) -> Any:
        client = make_client(config)
        client.meta.events.register("before-parameter-build.s3.PutObject", confirm_before_the_fence)
        return client

    monkeypatch.setattr(s3blobs.s3, "make_client", hooked)
    report = S3BlobStorage(gc_config(BUCKET)).collect_garbage(settle=0.05, progress=False)

    assert answers == [True]
    assert report.spared == 1 and report.deleted["blobs"].count == 1
    assert registry.exists("team/app", wanted) and has_entry(s3, BUCKET, wanted)
    assert not has_entry(s3, BUCKET, unwanted)


def test_progress_on_a_terminal_only(s3: Any, capsys: pytest.CaptureFixture[str]) -> None:
    storage = S3BlobStorage(gc_config(BUCKET))
    Registry(storage).image("team/app", "v1", [b"a layer"])
    capsys.readouterr()
    storage.collect_garbage(settle=0, progress=True)
    drawn = capsys.readouterr().err
    for phase in ("listing entries", "listing repositories", "reading manifests"):
        assert phase in drawn
    assert "marked=3" in drawn  # the manifest, its config and its layer
    storage.collect_garbage(settle=0)  # standard error is no terminal here: quiet
    assert capsys.readouterr().err == ""
