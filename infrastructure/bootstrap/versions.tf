################################################################################
# Tool and provider versions (same constraints as the main configuration)
################################################################################

terraform {
  required_version = ">= 1.11.1"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.60"
    }
  }

  # The state of this small configuration stays local (terraform.tfstate in
  # this folder, ignored by git): it only creates the bucket that holds every
  # other state. Keep that file, or import the bucket to manage it again.
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project   = var.name
      Purpose   = "opentofu-state"
      ManagedBy = "OpenTofu"
    }
  }
}
