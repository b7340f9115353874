################################################################################
# Tool and provider versions
################################################################################

terraform {
  # OpenTofu >= 1.10 is needed for the S3 backend's native lock file
  # (`use_lockfile`), and >= 1.11.1 for the write-only attributes used inside
  # terraform-aws-modules/rds v7. Terraform >= 1.11.1 satisfies the same
  # constraint, so either tool can plan this configuration.
  required_version = ">= 1.11.1"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.60"
    }
  }
}
