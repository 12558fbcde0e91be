# A private, encrypted bucket for s3blobs, the lifecycle rules that clean up after
# crashed uploads, and the IAM policy that grants the registry exactly what the
# driver calls.

locals {
  # Where the driver keeps open-upload state: s3blobs.paths.UPLOADS under the prefix.
  key_prefix     = var.prefix == "" ? "" : "${var.prefix}/"
  uploads_prefix = "${local.key_prefix}_uploads/"
  object_arns    = "${aws_s3_bucket.blobs.arn}/${local.key_prefix}*"
}

data "aws_region" "current" {}

resource "aws_s3_bucket" "blobs" {
  #checkov:skip=CKV_AWS_18:Access logs need a second bucket; the module leaves logging to the account's own setup.
  #checkov:skip=CKV_AWS_21:Blobs are content-addressed and never overwritten; versioning would only keep deleted layers.
  #checkov:skip=CKV_AWS_144:Cross-region replication is a deployment choice, not a default.
  #checkov:skip=CKV2_AWS_62:No consumer of event notifications; the registry needs none.
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "blobs" {
  bucket                  = aws_s3_bucket.blobs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "blobs" {
  bucket = aws_s3_bucket.blobs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "blobs" {
  bucket = aws_s3_bucket.blobs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.blobs.arn, "${aws_s3_bucket.blobs.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "tls_only" {
  bucket     = aws_s3_bucket.blobs.id
  policy     = data.aws_iam_policy_document.tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.blobs]
}

resource "aws_s3_bucket_lifecycle_configuration" "blobs" {
  bucket = aws_s3_bucket.blobs.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  rule {
    id     = "expire-upload-state"
    status = "Enabled"

    filter {
      prefix = local.uploads_prefix
    }

    expiration {
      days = var.upload_state_expiration_days
    }
  }
}

# Exactly the S3 actions the driver calls (tests/test_terraform.py proves it):
#   s3:ListBucket            HeadBucket, ListObjectsV2
#   s3:GetObject             GetObject, HeadObject (and the presigned GETs clients follow)
#   s3:PutObject             PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload
#   s3:DeleteObject          DeleteObject, DeleteObjects
#   s3:AbortMultipartUpload  AbortMultipartUpload
#   s3:ListBucketMultipartUploads  ListMultipartUploads (s3blobs gc: uploads left behind)
data "aws_iam_policy_document" "registry" {
  statement {
    sid       = "ListTheRegistryPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.blobs.arn]

    dynamic "condition" {
      for_each = var.prefix == "" ? [] : [local.key_prefix]
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${condition.value}*"]
      }
    }
  }

  # s3blobs gc lists the multipart uploads under <prefix>/data/ (uploads left behind).
  statement {
    sid       = "ListOpenUploads"
    actions   = ["s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.blobs.arn]
  }

  statement {
    sid = "ReadWriteBlobs"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
    ]
    resources = [local.object_arns]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "UseTheBucketKey"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "registry" {
  count  = var.role_name == null ? 0 : 1
  name   = "s3blobs-${var.bucket_name}"
  role   = var.role_name
  policy = data.aws_iam_policy_document.registry.json
}
