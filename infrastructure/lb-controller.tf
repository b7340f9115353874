################################################################################
# AWS Load Balancer Controller: IAM through EKS Pod Identity
################################################################################

# Only the IAM side lives here. The controller itself is installed with Helm
# (readme: "Install the AWS Load Balancer Controller"), which keeps this
# configuration free of the helm and kubernetes providers and of credentials
# to the cluster. The association binds the role to the service account
# kube-system/aws-load-balancer-controller that the chart creates.
module "lb_controller_pod_identity" {
  #checkov:skip=CKV_TF_1:Registry modules are pinned to an exact version; the registry protocol has no commit hash to pin.
  source  = "terraform-aws-modules/eks-pod-identity/aws"
  version = "2.9.0"

  # With an existing role (var.lb_controller_iam_role_arn) the module creates nothing: that role is bound to
  # the service account by the association below instead.
  create = var.lb_controller_iam_role_arn == null

  name = "${local.name}-aws-lbc"

  attach_aws_lb_controller_policy = true

  associations = {
    this = {
      cluster_name    = module.eks.cluster_name
      namespace       = "kube-system"
      service_account = "aws-load-balancer-controller"
    }
  }

  tags = local.tags
}

resource "aws_eks_pod_identity_association" "lb_controller_existing_role" {
  count = var.lb_controller_iam_role_arn == null ? 0 : 1

  cluster_name    = module.eks.cluster_name
  namespace       = "kube-system"
  service_account = "aws-load-balancer-controller"
  role_arn        = var.lb_controller_iam_role_arn

  tags = local.tags
}
