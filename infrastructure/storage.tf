################################################################################
# Persistent volumes: the EBS CSI driver (EKS add-on) with its IAM role through
# EKS Pod Identity, and the KMS key that encrypts the volumes it creates
################################################################################

# EKS clusters from 1.30 on have no default StorageClass and no in-tree EBS
# provisioner: without this driver every PersistentVolumeClaim (Prometheus,
# Alertmanager, OpenSearch) stays Pending. The StorageClass itself (gp3,
# encrypted with this key, the cluster's default) is a Kubernetes object and
# lives in kube_config/; it reads the key's ARN from infrastructure.env
# (EBS_KMS_KEY_ARN, outputs.tf).
resource "aws_kms_key" "ebs" {
  description             = "${local.name}: EBS volumes of PersistentVolumeClaims (EBS CSI driver)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_account_root.json
}

resource "aws_kms_alias" "ebs" {
  name          = "alias/${local.name}-ebs"
  target_key_id = aws_kms_key.ebs.key_id
}

# The module's policy is AWS's AmazonEBSCSIDriverPolicy (volumes and snapshots
# tagged by the driver only) plus the grants on the listed keys that encrypted
# volumes need (kms:CreateGrant for AWS resources, Encrypt, Decrypt,
# GenerateDataKey*, DescribeKey). The add-on binds the role to its controller's
# service account (eks.tf, pod_identity_association), so the controller has
# credentials from its first start.
module "ebs_csi_pod_identity" {
  #checkov:skip=CKV_TF_1:Registry modules are pinned to an exact version; the registry protocol has no commit hash to pin.
  source  = "terraform-aws-modules/eks-pod-identity/aws"
  version = "2.9.0"

  name = "${local.name}-ebs-csi"

  attach_aws_ebs_csi_policy = true
  aws_ebs_csi_kms_arns      = [aws_kms_key.ebs.arn]

  tags = local.tags
}
