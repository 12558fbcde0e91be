"""The s3blobs commands, in process, against moto: what they print (plain and
``--json``), their exit codes, and what they leave in the bucket."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from conftest import BUCKET, PART, all_keys
from netutil import free_port
from s3blobs import Config, S3BlobStorage, parse_digest
from s3blobs.cli import main
from s3blobs.registry import RegistryApp

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


class Run:
    """``s3blobs ARGS`` in this process: (exit code, stdout bytes, stderr text)."""

    def __init__(
        self, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.capture = capsysbinary
        self.monkeypatch = monkeypatch

    def __call__(self, *argv: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
        self.capture.readouterr()
        if stdin is not None:
            self.monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse: --help, --version, a usage error
            code = exc.code if isinstance(exc.code, int) else 2
        out, err = self.capture.readouterr()
        return code, out, err.decode()

    def json(self, *argv: str, stdin: bytes | None = None) -> list[dict[str, Any]]:
        code, out, err = self(*argv, "--json", stdin=stdin)
        assert code == 0, err
        return [json.loads(line) for line in out.decode().splitlines()]


@pytest.fixture
def cli(s3: Any, monkeypatch: pytest.MonkeyPatch, capsysbinary: Any) -> Run:
    for name, value in {
        "S3BLOBS_BUCKET": BUCKET,
        "S3BLOBS_PART_SIZE": str(PART),
        "S3BLOBS_MAX_CONCURRENCY": "2",
        "S3BLOBS_CACHE_SIZE": "0",
    }.items():
        monkeypatch.setenv(name, value)
    return Run(capsysbinary, monkeypatch)


@pytest.fixture
def storage(s3: Any) -> S3BlobStorage:
    return S3BlobStorage(Config(bucket=BUCKET, part_size=PART, cache_size=0))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_put_stat_get_ls_rm_in_a_repository(cli: Run, tmp_path: Path) -> None:
    source = tmp_path / "config.json"
    source.write_bytes(b'{"os":"linux"}')
    [put] = cli.json("put", str(source), "--repo", "library/app", "--media-type", CONFIG_TYPE)
    assert put == {"mediaType": CONFIG_TYPE, "size": 14, "digest": sha256(source.read_bytes())}
    digest = put["digest"]

    code, out, _ = cli("stat", digest, "--repo", "library/app")
    assert (code, out.decode()) == (0, f"{digest}\t14\t{CONFIG_TYPE}\n")
    assert cli.json("stat", digest) == [put]  # the global store holds it too

    code, out, _ = cli("get", digest, "--repo", "library/app")
    assert (code, out) == (0, source.read_bytes())
    target = tmp_path / "out" / "copy.json"
    target.parent.mkdir()
    assert cli("get", digest, "--repo", "library/app", "-o", str(target))[0] == 0
    assert target.read_bytes() == source.read_bytes()
    assert list(target.parent.iterdir()) == [target]  # no temporary left beside it

    assert cli.json("ls", "--repo", "library/app") == [{"digest": digest}]
    assert cli.json("ls", "--long", "--repo", "library/app") == [put]
    assert cli("ls", "-l")[1].decode() == f"{digest}\t14\t{CONFIG_TYPE}\n"

    assert cli.json("rm", digest, "--repo", "library/app") == [
        {"deleted": digest, "repository": "library/app"}
    ]
    assert cli("stat", digest, "--repo", "library/app")[0] == 1
    assert cli("stat", digest)[0] == 0  # unlinked only: the blob stays
    assert cli("rm", digest)[0] == 0
    assert cli("stat", digest)[0] == 1
    assert cli.json("ls") == []


def test_a_large_put_from_stdin_goes_through_the_writer(cli: Run, s3: Any, tmp_path: Path) -> None:
    data = os.urandom(2 * PART + 12345)
    code, out, err = cli("put", "-", "--repo", "big/one", stdin=data)
    assert code == 0, err
    upload = re.search(r"upload (\S+) started; if it is interrupted: --resume \1", err)
    assert upload, err  # the id comes first, so an interrupted put can be resumed
    digest, size, media_type = out.decode().split()
    assert (digest, int(size), media_type) == (sha256(data), len(data), "application/octet-stream")
    assert any(key.startswith("data/") for key in all_keys(s3))  # a multipart upload
    assert not [key for key in all_keys(s3) if key.startswith("_uploads/")]
    assert cli("get", digest, "--repo", "big/one")[1] == data

    [sha512] = cli.json("put", "-", "--digest-algorithm", "sha512", stdin=data)
    assert sha512["digest"] == "sha512:" + hashlib.sha512(data).hexdigest()
    assert cli("get", sha512["digest"], "-o", str(tmp_path / "x"))[0] == 0
    assert (tmp_path / "x").read_bytes() == data


def test_put_resume_refuses_other_bytes(cli: Run, storage: S3BlobStorage, tmp_path: Path) -> None:
    writer = storage.repository("library/app").create()
    writer.write(b"the first bytes")
    writer.close()
    other = tmp_path / "other"
    other.write_bytes(b"THE FIRST BYTES and more")
    code, _, err = cli("put", str(other), "--repo", "library/app", "--resume", writer.id)
    assert code == 2
    assert (
        err.startswith("s3blobs: the first 15 bytes of the input differ") and err.count("\n") == 1
    )
    same = tmp_path / "same"
    same.write_bytes(b"the first bytes and more")
    [put] = cli.json("put", str(same), "--repo", "library/app", "--resume", writer.id)
    assert put["digest"] == sha256(same.read_bytes())
    assert cli("put", str(same), "--repo", "library/app", "--resume", writer.id)[0] == 1  # done


def test_get_of_a_corrupt_blob_fails_and_leaves_no_file(
    cli: Run, s3: Any, storage: S3BlobStorage, tmp_path: Path
) -> None:
    digest = storage.blobs.put("a/b", b"the real bytes").digest
    key = storage.paths.blob(parse_digest(digest))
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"other bytes!!!")
    target = tmp_path / "blob"
    code, _, err = cli("get", digest, "-o", str(target))
    assert code == 3
    assert "corrupt" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"kept")
    assert cli("get", digest, "-o", str(target))[0] == 3
    assert target.read_bytes() == b"kept"  # an existing file is not touched either


def test_exit_codes_and_one_line_errors(
    cli: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = sha256(b"nothing")
    cases = [
        (("stat", missing), 1, missing),
        (("get", missing, "--repo", "library/app"), 1, missing),
        (("rm", missing), 1, missing),
        (("stat", "sha256:1234"), 2, "sha256 takes 64 hex characters"),
        (("stat", "md5:abcd"), 2, "unsupported digest algorithm"),
        (("ls", "--repo", "Library/App"), 2, "invalid repository name"),
        (("put", str(tmp_path / "absent")), 2, "no such file"),
        (("put", str(tmp_path)), 2, "is a directory"),
        (("manifest", "library/app"), 2, "expected NAME:TAG or NAME@DIGEST"),
        (("manifest", "library/app:v1"), 1, "no tag 'v1'"),
        (("tags", "no/such/repo"), 1, "no repository"),
        (("uploads", "abort", "bm90LWFuLXVwbG9hZA"), 1, "no open upload"),
        (("stat",), 2, "s3blobs stat: the following arguments are required: DIGEST"),
        (("frobnicate",), 2, "invalid choice"),
    ]
    for argv, expected, message in cases:
        code, out, err = cli(*argv)
        assert (code, out) == (expected, b""), (argv, err)
        assert message in err and err.count("\n") == 1, (argv, err)

    monkeypatch.setenv("S3BLOBS_BUCKET", "no-such-bucket")
    code, _, err = cli("ls")
    assert code == 2 and "does not exist (S3BLOBS_BUCKET)" in err
    monkeypatch.setenv("S3BLOBS_PART_SIZE", "1MiB")
    assert cli("ls")[0] == 2
    monkeypatch.delenv("S3BLOBS_BUCKET")
    code, _, err = cli("repos")
    assert code == 2 and "S3BLOBS_BUCKET is required" in err


def test_storage_trouble_is_exit_3(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3BLOBS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody
    code, _, err = cli("ls")
    assert code == 3
    assert err.startswith("s3blobs: checking bucket") and err.count("\n") == 1


def test_repos_tags_and_manifests(cli: Run, storage: S3BlobStorage) -> None:
    registry = Client(RegistryApp(storage))
    pushed = {}
    for name in ("library/app", "library/app/nested", "zeta"):
        config = b'{"os":"linux","name":"%s"}' % name.encode()
        assert (
            registry.post(
                f"/v2/{name}/blobs/uploads/", query_string={"digest": sha256(config)}, data=config
            ).status_code
            == 201
        )
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": sha256(config)},
                "layers": [],
            }
        ).encode()
        for tag in ("v1", "latest"):
            response = registry.put(
                f"/v2/{name}/manifests/{tag}",
                data=manifest,
                headers={"Content-Type": OCI_MANIFEST},
            )
            assert response.status_code == 201
        pushed[name] = manifest
    storage.repository("only/blobs").put("a/b", b"a blob, no manifest")

    assert cli("repos")[1].decode().split() == [
        "library/app",
        "library/app/nested",
        "only/blobs",
        "zeta",
    ]
    assert cli.json("repos")[0] == {"name": "library/app"}
    assert cli.json("tags", "library/app") == [{"tag": "latest"}, {"tag": "v1"}]
    assert cli("tags", "only/blobs") == (0, b"", "")  # a repository, with no tags

    body = pushed["library/app/nested"]
    code, out, _ = cli("manifest", "library/app/nested:v1")
    assert (code, out) == (0, body)  # the bytes as pushed
    [described] = cli.json("manifest", f"library/app/nested@{sha256(body)}")
    assert described == {
        "mediaType": OCI_MANIFEST,
        "size": len(body),
        "digest": sha256(body),
        "manifest": json.loads(body),
    }
    code, _, err = cli("manifest", f"zeta@{sha256(body)}")  # another repository's
    assert code == 1 and "no manifest" in err


def test_uploads_ls_and_abort(cli: Run, s3: Any, storage: S3BlobStorage) -> None:
    writer = storage.repository("library/app").create()
    writer.write(b"x" * 1000)
    writer.close()
    global_writer = storage.blobs.create()
    global_writer.close()

    rows = {row["id"]: row for row in cli.json("uploads")}
    assert set(rows) == {writer.id, global_writer.id}
    row = rows[writer.id]
    assert set(row) == {
        "id",
        "repository",
        "size",
        "startedAt",
        "updatedAt",
        "ageSeconds",
        "committing",
        "readable",
    }
    assert (row["repository"], row["size"], row["committing"], row["readable"]) == (
        "library/app",
        1000,
        "",
        True,
    )
    assert 0 <= row["ageSeconds"] < 60
    assert rows[global_writer.id]["repository"] is None
    code, out, _ = cli("uploads", "ls")
    assert code == 0 and f"{writer.id}\tlibrary/app\t1000\t" in out.decode()

    assert cli.json("uploads", "abort", writer.id) == [
        {"aborted": writer.id, "repository": "library/app"}
    ]
    assert cli("uploads", "abort", global_writer.id)[0] == 0
    assert cli.json("uploads") == []
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    assert cli("uploads", "abort", writer.id)[0] == 1


def test_version_and_help(cli: Run) -> None:
    from importlib.metadata import version

    code, out, _ = cli("--version")
    assert (code, out.decode()) == (0, f"s3blobs {version('s3blobs')}\n")
    code, out, _ = cli("--help")
    listed = out.decode()
    for command in ("serve", "put", "get", "stat", "ls", "rm", "repos", "tags", "manifest"):
        assert re.search(rf"^\s+{command}\s", listed, re.M), command
    assert "uploads" in listed and "gc" in listed
