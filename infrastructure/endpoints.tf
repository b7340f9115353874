################################################################################
# VPC endpoints: image pulls from ECR, credentials (STS, EKS Pod Identity) and
# Secrets Manager reads stay inside the VPC, in every zone
################################################################################

# Without them every call below leaves through a NAT gateway: with one NAT per
# zone (the default) a zone's loss takes only that zone's egress; with a single
# NAT (one_nat_gateway_per_az = false) it would stop add-on image pulls, new
# Pod Identity credentials and the External Secrets refreshes in every zone.
# Interface endpoints answer on the AWS service names themselves (private DNS),
# so no client needs a setting. Images from other registries (GHCR) still come
# through the NAT gateway of their zone.
locals {
  # Interface endpoints: one ENI per private subnet each. eks-auth is the Pod Identity agent's API
  # (AssumeRoleForPodIdentity); sts serves the SDKs' own role assumptions.
  interface_endpoint_services = ["ecr.api", "ecr.dkr", "sts", "secretsmanager", "eks-auth"]
}

module "vpc_endpoints" {
  #checkov:skip=CKV_TF_1:Registry modules are pinned to an exact version; the registry protocol has no commit hash to pin.
  source  = "terraform-aws-modules/vpc/aws//modules/vpc-endpoints"
  version = "6.7.3"

  vpc_id     = module.vpc.vpc_id
  subnet_ids = module.vpc.private_subnets

  create_security_group      = var.vpc_interface_endpoints_enabled
  security_group_name_prefix = "${local.name}-vpc-endpoints-"
  security_group_description = "Interface endpoints of ${local.name}: HTTPS from the VPC only"
  security_group_rules = {
    https_from_vpc = {
      type        = "ingress"
      protocol    = "tcp"
      from_port   = 443
      to_port     = 443
      description = "HTTPS from the VPC"
      cidr_blocks = [module.vpc.vpc_cidr_block]
    }
  }

  endpoints = merge(
    {
      # ECR keeps image layers in S3: a gateway endpoint (no hourly price) on the private route tables.
      s3 = {
        service         = "s3"
        service_type    = "Gateway"
        route_table_ids = module.vpc.private_route_table_ids
        tags            = { Name = "${local.name}-s3" }
      }
    },
    {
      for service in local.interface_endpoint_services : replace(service, ".", "_") => {
        service             = service
        service_type        = "Interface"
        private_dns_enabled = true
        create              = var.vpc_interface_endpoints_enabled
        tags                = { Name = "${local.name}-${replace(service, ".", "-")}" }
      }
    },
  )

  tags = local.tags
}
