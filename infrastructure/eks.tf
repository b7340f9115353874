################################################################################
# EKS: private + restricted public endpoint, KMS secrets, audit logs,
# access entries, the AL2023 managed node groups of node-groups.tf
################################################################################

module "eks" {
  #checkov:skip=CKV_TF_1:Registry modules are pinned to an exact version; the registry protocol has no commit hash to pin.
  source  = "terraform-aws-modules/eks/aws"
  version = "21.29.0"

  name               = local.name
  kubernetes_version = var.kubernetes_version

  # An existing control plane role (var.cluster_iam_role_arn) replaces the one the module creates; the module
  # then attaches no policy to it, the KMS permissions for secrets encryption included.
  create_iam_role = var.cluster_iam_role_arn == null
  iam_role_arn    = var.cluster_iam_role_arn

  # At the end of standard support EKS upgrades the control plane instead of
  # silently moving the cluster to the six-times dearer extended support.
  upgrade_policy = {
    support_type = "STANDARD"
  }

  vpc_id                   = module.vpc.vpc_id
  subnet_ids               = module.vpc.private_subnets
  control_plane_subnet_ids = module.vpc.intra_subnets

  # Nodes and pods use the private endpoint; people use the public one, and
  # only from the listed CIDRs. An empty list leaves the API private only.
  endpoint_private_access      = true
  endpoint_public_access       = length(var.cluster_endpoint_public_access_cidrs) > 0
  endpoint_public_access_cidrs = var.cluster_endpoint_public_access_cidrs

  # Envelope encryption of Kubernetes Secrets with a key this configuration owns.
  create_kms_key = false
  encryption_config = {
    provider_key_arn = aws_kms_key.eks.arn
    resources        = ["secrets"]
  }

  enabled_log_types                      = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
  create_cloudwatch_log_group            = true
  cloudwatch_log_group_retention_in_days = var.log_retention_days
  cloudwatch_log_group_kms_key_id        = aws_kms_key.logs.arn

  # Access entries only (no aws-auth ConfigMap), and no implicit admin for
  # whoever ran apply: admins are listed explicitly.
  authentication_mode                      = "API"
  enable_cluster_creator_admin_permissions = false
  access_entries = {
    for arn in var.cluster_admin_principal_arns : arn => {
      principal_arn = arn
      policy_associations = {
        cluster_admin = {
          policy_arn = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
          access_scope = {
            type = "cluster"
          }
        }
      }
    }
  }

  # Controllers get their credentials from EKS Pod Identity. The IAM OIDC provider serves the two
  # SecretStores (db-credentials.tf): each authenticates with its own service account's token, which Pod
  # Identity cannot give a store that does not run as a pod.
  enable_irsa = true

  addons = {
    vpc-cni = {
      before_compute = true
      most_recent    = true
      # Enforce Kubernetes NetworkPolicy objects (the EKS overlay ships some).
      configuration_values = jsonencode({
        enableNetworkPolicy = "true"
      })
    }
    eks-pod-identity-agent = {
      before_compute = true
      most_recent    = true
    }
    kube-proxy = {
      most_recent = true
    }
    coredns = {
      most_recent = true
    }
    # PersistentVolumes on EBS (storage.tf): the controller's service account gets its role through Pod
    # Identity, created with the add-on.
    aws-ebs-csi-driver = {
      most_recent = true
      pod_identity_association = [{
        role_arn        = module.ebs_csi_pod_identity.iam_role_arn
        service_account = "ebs-csi-controller-sa"
      }]
    }
    # Resource metrics for the HorizontalPodAutoscaler of the Kubernetes manifests (EKS community add-on).
    metrics-server = {
      most_recent = true
    }
  }

  # One group per availability zone: node-groups.tf.
  eks_managed_node_groups = local.eks_managed_node_groups

  tags = local.tags
}
