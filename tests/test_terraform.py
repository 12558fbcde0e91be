"""The Terraform module: formatting, security settings, prefixes, least privilege,
validate, apply against a moto server, and checkov, all offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from conftest import OPERATIONS_SEEN
from s3blobs import Descriptor, S3BlobStorage, StorageError
from s3blobs.paths import UPLOADS, Paths

MODULE = Path(__file__).resolve().parent.parent / "terraform"
PLUGINS = Path("/opt/tf-plugins")

#: The IAM action each S3 operation the driver calls needs.
IAM_ACTION = {
    "HeadBucket": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
    "DeleteObjects": "s3:DeleteObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}


def parse(name: str) -> dict[str, Any]:
    with open(MODULE / name) as f:
        return dict(
            hcl2.load(
                f,
                serialization_options=SerializationOptions(
                    strip_string_quotes=True, explicit_blocks=False
                ),
            )
        )


def blocks(tree: dict[str, Any], section: str) -> dict[tuple[str, str], Any]:
    found = {}
    for block in tree.get(section, []):
        for kind, named in block.items():
            for name, body in named.items():
                found[(kind, name)] = body
    return found


def terraform() -> str:
    path = shutil.which("terraform")
    if path is None:
        pytest.skip("terraform is not installed on this machine")
    return path


def run_terraform(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [terraform(), *args],
        cwd=cwd,
        env={**os.environ, "CHECKPOINT_DISABLE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_fmt() -> None:
    run_terraform("fmt", "-check", "-recursive", "-diff", cwd=MODULE)


def test_security_settings() -> None:
    resources = blocks(parse("main.tf"), "resource")
    access = resources[("aws_s3_bucket_public_access_block", "blobs")]
    for setting in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert access[setting] is True, setting
    [ownership] = resources[("aws_s3_bucket_ownership_controls", "blobs")]["rule"]
    assert ownership["object_ownership"] == "BucketOwnerEnforced"
    [sse] = resources[("aws_s3_bucket_server_side_encryption_configuration", "blobs")]["rule"]
    [default] = sse["apply_server_side_encryption_by_default"]
    assert "AES256" in default["sse_algorithm"] and "aws:kms" in default["sse_algorithm"]
    [deny] = blocks(parse("main.tf"), "data")[("aws_iam_policy_document", "tls_only")]["statement"]
    assert deny["effect"] == "Deny" and deny["actions"] == ["s3:*"]
    [condition] = deny["condition"]
    assert (condition["variable"], condition["values"]) == ("aws:SecureTransport", ["false"])
    rules = {
        r["id"]: r for r in resources[("aws_s3_bucket_lifecycle_configuration", "blobs")]["rule"]
    }
    abort = rules["abort-incomplete-multipart-uploads"]
    assert abort["filter"] == [{}]  # the whole bucket, not a prefix
    assert (
        abort["abort_incomplete_multipart_upload"][0]["days_after_initiation"]
        == "${var.abort_incomplete_multipart_days}"
    )
    expire = rules["expire-upload-state"]
    assert expire["filter"] == [{"prefix": "${local.uploads_prefix}"}]


def test_upload_prefix_is_the_drivers() -> None:
    [local] = parse("main.tf")["locals"]
    assert local["key_prefix"] == '${var.prefix == "" ? "" : "${var.prefix}/"}'
    assert local["uploads_prefix"] == "${local.key_prefix}" + UPLOADS
    for prefix in ("", "registry", "a/b"):
        key_prefix = f"{prefix}/" if prefix else ""
        assert key_prefix + UPLOADS == Paths(prefix).uploads_root


def granted_actions() -> set[str]:
    policy = blocks(parse("main.tf"), "data")[("aws_iam_policy_document", "registry")]
    return {action for statement in policy["statement"] for action in statement["actions"]}


@pytest.mark.after_all
def test_policy_grants_exactly_what_the_driver_calls(full_suite: bool) -> None:
    unknown = OPERATIONS_SEEN - IAM_ACTION.keys()
    assert not unknown, f"map these S3 operations to their IAM action: {unknown}"
    needed = {IAM_ACTION[op] for op in OPERATIONS_SEEN}
    granted = granted_actions()
    assert needed <= granted, f"missing from the policy: {needed - granted}"
    if not full_suite:
        pytest.skip("only a full run sees every operation; checked nothing is missing")
    assert granted == needed, f"granted but never used: {granted - needed}"


@pytest.fixture
def initialised(tmp_path: Path) -> Path:
    """A copy of the module with the example initialised from the local provider mirror."""
    terraform()
    if not PLUGINS.is_dir():
        pytest.skip(f"no Terraform provider mirror at {PLUGINS}")
    copy = tmp_path / "terraform"
    shutil.copytree(MODULE, copy, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    example = copy / "examples" / "basic"
    run_terraform("init", "-backend=false", f"-plugin-dir={PLUGINS}", "-input=false", cwd=example)
    return example


def test_validate(initialised: Path) -> None:
    assert "configuration is valid" in run_terraform("validate", "-no-color", cwd=initialised)


@pytest.mark.slow
def test_apply_against_moto_then_a_blob_round_trip(
    initialised: Path, moto_server: str, s3: Any
) -> None:
    bucket = "tf-applied-blobs"
    run_terraform(
        "apply",
        "-auto-approve",
        "-input=false",
        "-no-color",
        "-var",
        f"s3_endpoint={moto_server}",
        "-var",
        f"bucket_name={bucket}",
        cwd=initialised,
    )
    outputs = json.loads(run_terraform("output", "-json", cwd=initialised))
    environment = outputs["environment"]["value"]
    assert environment["S3BLOBS_BUCKET"] == bucket and environment["S3BLOBS_PREFIX"] == "registry"
    import boto3

    raw = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    rules = {r["ID"]: r for r in raw.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["expire-upload-state"]["Filter"]["Prefix"] == Paths("registry").uploads_root
    assert raw.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"][
        "BlockPublicAcls"
    ]

    env = {**environment, "S3BLOBS_ENDPOINT_URL": moto_server, "S3BLOBS_ADDRESSING_STYLE": "path"}
    repo = S3BlobStorage.from_env(env).repository("terraform/app")
    # moto enforces the bucket policy, and it speaks plain HTTP: the TLS-only policy bites.
    with pytest.raises(StorageError, match="403"):
        repo.put("application/octet-stream", b"over plain http")
    raw.delete_bucket_policy(Bucket=bucket)
    small = repo.put("application/octet-stream", b"through the module's bucket")
    assert repo.get(small.digest) == b"through the module's bucket"
    data = os.urandom(17 * 1024 * 1024)
    writer = repo.create()
    writer.write(data)
    big = writer.commit(Descriptor("application/octet-stream", len(data), writer.computed_digest()))
    assert repo.get(big.digest) == data
    keys = [o["Key"] for o in raw.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys and all(k.startswith("registry/") for k in keys)


def checkov() -> str:
    candidates = [
        os.environ.get("S3BLOBS_CHECKOV"),
        str(Path(".venv-checkov/bin/checkov").resolve()),
        shutil.which("checkov"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    if os.environ.get("S3BLOBS_REQUIRE_TOOLS"):
        pytest.fail("checkov is required here (S3BLOBS_REQUIRE_TOOLS is set)")
    pytest.skip("checkov is not installed (it pins its own boto3: give it a venv, see .ci/run)")


def test_checkov_passes_offline() -> None:
    done = subprocess.run(
        [
            checkov(),
            "-d",
            str(MODULE),
            "--framework",
            "terraform",
            "--skip-download",
            "-o",
            "json",
            "--quiet",
        ],
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout)
    summary = report["summary"] if isinstance(report, dict) else report[0]["summary"]
    assert summary["failed"] == 0, done.stdout
    assert summary["passed"] > 30
    # every skip carries its reason in the code
    for line in (MODULE / "main.tf").read_text().splitlines():
        if "checkov:skip=" in line:
            assert len(line.split(":", 2)[-1].strip()) > 20, line
