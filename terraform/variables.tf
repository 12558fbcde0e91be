variable "bucket_name" {
  description = "Name of the bucket that holds the registry's blobs (S3BLOBS_BUCKET)."
  type        = string
}

variable "prefix" {
  description = "Key prefix s3blobs writes under (S3BLOBS_PREFIX); empty for the whole bucket."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$", var.prefix))
    error_message = "prefix is path components of letters, digits, '.', '_' and '-', joined by '/', with no leading or trailing '/'."
  }
}

variable "kms_key_arn" {
  description = "KMS key for default encryption (SSE-KMS); null for SSE-S3."
  type        = string
  default     = null
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which S3 aborts a multipart upload nobody finished (crashed or abandoned pushes)."
  type        = number
  default     = 7
}

variable "upload_state_expiration_days" {
  description = "Days after which open-upload state under <prefix>/_uploads/ expires."
  type        = number
  default     = 7
}

variable "role_name" {
  description = "IAM role of the registry to attach the least-privilege policy to; null to attach nothing."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let terraform destroy the bucket with blobs in it."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for the bucket."
  type        = map(string)
  default     = {}
}
