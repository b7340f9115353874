################################################################################
# Cluster Autoscaler: IAM through EKS Pod Identity
################################################################################

# The zones' node groups (node-groups.tf) grow up to their share of
# node_max_size when pods cannot be scheduled (the HPA's replicas above what
# the nodes hold) and shrink again. Only the IAM side lives here; the
# controller is a Helm chart that Argo CD installs into kube-system with the
# service account below (kube_config/). EKS tags each managed node group's Auto
# Scaling group with k8s.io/cluster-autoscaler/enabled and
# k8s.io/cluster-autoscaler/<cluster>, which the controller's auto-discovery
# and this policy's conditions use.
module "cluster_autoscaler_pod_identity" {
  #checkov:skip=CKV_TF_1:Registry modules are pinned to an exact version; the registry protocol has no commit hash to pin.
  source  = "terraform-aws-modules/eks-pod-identity/aws"
  version = "2.9.0"

  name = "${local.name}-cluster-autoscaler"

  attach_cluster_autoscaler_policy = true
  cluster_autoscaler_cluster_names = [module.eks.cluster_name]

  associations = {
    this = {
      cluster_name    = module.eks.cluster_name
      namespace       = "kube-system"
      service_account = "cluster-autoscaler"
    }
  }

  tags = local.tags
}
