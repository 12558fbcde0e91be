output "bucket" {
  description = "The bucket's name."
  value       = aws_s3_bucket.blobs.id
}

output "bucket_arn" {
  description = "The bucket's ARN."
  value       = aws_s3_bucket.blobs.arn
}

output "iam_policy_json" {
  description = "The registry's least-privilege policy, to attach wherever the registry runs."
  value       = data.aws_iam_policy_document.registry.json
}

output "uploads_prefix" {
  description = "Where s3blobs keeps open-upload state (expired by the lifecycle rule)."
  value       = local.uploads_prefix
}

output "environment" {
  description = "The S3BLOBS_* environment for the registry."
  value = merge(
    {
      S3BLOBS_BUCKET = aws_s3_bucket.blobs.id
      S3BLOBS_REGION = data.aws_region.current.name
      S3BLOBS_PREFIX = var.prefix
    },
    var.kms_key_arn == null ? {} : {
      S3BLOBS_SSE            = "aws:kms"
      S3BLOBS_SSE_KMS_KEY_ID = var.kms_key_arn
    },
  )
}
