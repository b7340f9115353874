################################################################################
# Names, tags and lookups shared by every file
################################################################################

# An explicit list of zones, so the subnets never move when AWS opens a new
# zone in the region.
data "aws_availability_zones" "available" {
  filter {
    name   = "zone-name"
    values = local.requested_azs
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == 3
      error_message = "Three availability zones are needed; set availability_zones to three zones this account can use in ${var.region}."
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  name = "${var.name}-${var.environment}"

  requested_azs = length(var.availability_zones) > 0 ? var.availability_zones : [for suffix in ["a", "b", "c"] : "${var.region}${suffix}"]
  azs           = data.aws_availability_zones.available.names

  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  tags = merge(var.tags, {
    Project     = var.name
    Environment = var.environment
    ManagedBy   = "OpenTofu"
    Repository  = "flask-api"
  })
}
