################################################################################
# Names, tags and lookups shared by every file
################################################################################

# Zones are chosen by zone ID: a zone name (us-east-1a) maps to a different physical zone in every account,
# and EKS refuses control-plane subnets in some zone IDs. Either the three IDs of availability_zone_ids, or
# the first three available IDs (sorted, so the choice stays put) that EKS supports.
data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:The IDs are sorted and the first three taken, so a zone AWS adds later (a higher azN) changes nothing; availability_zone_ids pins them outright.
  state            = "available"
  exclude_zone_ids = var.eks_unsupported_zone_ids

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }

  lifecycle {
    postcondition {
      condition     = length(self.zone_ids) >= 3
      error_message = "Three availability zones that EKS supports are needed in ${var.region}."
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  name = "${var.name}-${var.environment}"

  # Zone IDs (use1-az1, ...): the VPC module places subnets by ID when given IDs.
  azs = length(var.availability_zone_ids) > 0 ? var.availability_zone_ids : slice(sort(data.aws_availability_zones.available.zone_ids), 0, 3)

  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  tags = merge(var.tags, {
    Project     = var.name
    Environment = var.environment
    ManagedBy   = "OpenTofu"
    Repository  = "flask-api"
  })
}
