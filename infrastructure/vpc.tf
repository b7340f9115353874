################################################################################
# VPC: three AZs, four subnet tiers, flow logs
################################################################################

# Layout for a /16: private /20s (nodes and pods, 4,096 addresses each) and
# /24s for the public (ALB, NAT), database and intra (EKS control-plane ENIs)
# tiers. Intra and database subnets have no route to the internet.
locals {
  private_subnets  = [for i, az in local.azs : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets   = [for i, az in local.azs : cidrsubnet(var.vpc_cidr, 8, i + 48)]
  database_subnets = [for i, az in local.azs : cidrsubnet(var.vpc_cidr, 8, i + 52)]
  intra_subnets    = [for i, az in local.azs : cidrsubnet(var.vpc_cidr, 8, i + 56)]
}

module "vpc" {
  #checkov:skip=CKV_TF_1:Registry modules are pinned to an exact version; the registry protocol has no commit hash to pin.
  source  = "terraform-aws-modules/vpc/aws"
  version = "6.7.3"

  name = local.name
  cidr = var.vpc_cidr
  azs  = local.azs

  private_subnets  = local.private_subnets
  public_subnets   = local.public_subnets
  database_subnets = local.database_subnets
  intra_subnets    = local.intra_subnets

  create_database_subnet_group       = true
  create_database_subnet_route_table = true

  enable_dns_hostnames = true
  enable_dns_support   = true

  # One NAT gateway per zone by default: a zone's loss stops only its own egress. A single shared one is
  # cheaper and fits dev and staging (one_nat_gateway_per_az = false).
  enable_nat_gateway     = true
  single_nat_gateway     = !var.one_nat_gateway_per_az
  one_nat_gateway_per_az = var.one_nat_gateway_per_az

  # Public subnets never hand out public IPs on their own.
  map_public_ip_on_launch = false

  # The default security group keeps no rules, so nothing lands in it by accident.
  manage_default_security_group  = true
  default_security_group_ingress = []
  default_security_group_egress  = []

  # The AWS Load Balancer Controller places internet-facing ALBs in subnets
  # tagged elb and internal ones in subnets tagged internal-elb.
  public_subnet_tags = {
    "kubernetes.io/role/elb" = "1"
  }
  private_subnet_tags = {
    "kubernetes.io/role/internal-elb" = "1"
  }

  enable_flow_log                                 = true
  create_flow_log_cloudwatch_log_group            = true
  create_flow_log_cloudwatch_iam_role             = true
  flow_log_traffic_type                           = "ALL"
  flow_log_max_aggregation_interval               = 60
  flow_log_cloudwatch_log_group_retention_in_days = var.log_retention_days
  flow_log_cloudwatch_log_group_kms_key_id        = aws_kms_key.logs.arn

  tags = local.tags
}
