################################################################################
# Providers
################################################################################

provider "aws" {
  region = var.region

  # Every resource that supports tags carries these, including the ones the
  # registry modules create.
  default_tags {
    tags = local.tags
  }
}
