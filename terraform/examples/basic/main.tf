# The module with its defaults. Against AWS: set region and credentials as usual.
# Against another S3 (the tests use a moto server): set s3_endpoint.

variable "bucket_name" {
  type    = string
  default = "my-registry-blobs"
}

variable "prefix" {
  type    = string
  default = "registry"
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "s3_endpoint" {
  description = "An S3-compatible endpoint instead of AWS (for offline tests)."
  type        = string
  default     = null
}

provider "aws" {
  region                      = var.region
  s3_use_path_style           = var.s3_endpoint != null
  skip_credentials_validation = var.s3_endpoint != null
  skip_requesting_account_id  = var.s3_endpoint != null
  skip_metadata_api_check     = var.s3_endpoint != null
  skip_region_validation      = var.s3_endpoint != null

  endpoints {
    s3 = var.s3_endpoint
  }
}

module "blobs" {
  source        = "../.."
  bucket_name   = var.bucket_name
  prefix        = var.prefix
  force_destroy = true
}

output "environment" {
  value = module.blobs.environment
}

output "iam_policy_json" {
  value = module.blobs.iam_policy_json
}
