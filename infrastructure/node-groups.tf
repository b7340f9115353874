################################################################################
# Managed node groups: one per availability zone
################################################################################

# The Cluster Autoscaler chooses which node group grows, but an Auto Scaling group that spans zones chooses
# the zone of its new node itself: a pod bound to a zonal EBS volume (Prometheus, Alertmanager, OpenSearch)
# or held back by the API's zone spread could wait for a node that lands in another zone. One group per
# zone, each in its own zone's private subnet (the VPC module puts private_subnets[i] in azs[i]), lets the
# autoscaler grow the zone the pod needs; balance-similar-node-groups
# (kube_config/platform/cluster-autoscaler/values.yaml) keeps the zones even otherwise.
locals {
  # node_min_size, node_max_size and node_desired_size are totals over the zones, split as evenly as they
  # divide, the first zones taking the remainder: 9 -> 3 + 3 + 3, 2 -> 1 + 1 + 0.
  node_zone_sizes = {
    for setting, total in { min = var.node_min_size, max = var.node_max_size, desired = var.node_desired_size } :
    setting => [for i, az in local.azs : floor(total / length(local.azs)) + (i < total % length(local.azs) ? 1 : 0)]
  }

  eks_managed_node_groups = {
    for i, az in local.azs : az => {
      ami_type       = "AL2023_x86_64_STANDARD"
      instance_types = var.node_instance_types
      capacity_type  = "ON_DEMAND"

      # An existing node role (var.node_iam_role_arn) replaces the one the module creates.
      create_iam_role = var.node_iam_role_arn == null
      iam_role_arn    = var.node_iam_role_arn

      subnet_ids = [module.vpc.private_subnets[i]]

      min_size     = local.node_zone_sizes.min[i]
      max_size     = local.node_zone_sizes.max[i]
      desired_size = local.node_zone_sizes.desired[i]

      block_device_mappings = {
        xvda = {
          device_name = "/dev/xvda"
          ebs = {
            volume_size           = var.node_disk_size_gib
            volume_type           = "gp3"
            encrypted             = true
            delete_on_termination = true
          }
        }
      }

      # IMDSv2 only, and a hop limit of 1 so pods cannot borrow the node role
      # through the instance metadata service (they use Pod Identity instead).
      metadata_options = {
        http_endpoint               = "enabled"
        http_tokens                 = "required"
        http_put_response_hop_limit = 1
      }
    }
  }
}
