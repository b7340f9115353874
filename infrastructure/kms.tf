################################################################################
# KMS keys: one per concern, so a key policy or a deletion never spans two
################################################################################

# Key policies delegate to IAM in this account (the AWS default); the service
# roles get their grants through IAM policies the modules attach. The logs key
# also lets CloudWatch Logs use it for this account's log groups only.

data "aws_iam_policy_document" "kms_account_root" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; administration is delegated to IAM in this account.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" means this key only; the account root principal delegates to IAM policies.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" means this key only; it cannot reach any other resource.
  statement {
    sid       = "AccountAdministersKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

data "aws_iam_policy_document" "kms_logs" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; administration is delegated to IAM in this account.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" means this key only; CloudWatch Logs is limited by the encryption-context condition.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" means this key only; it cannot reach any other resource.
  source_policy_documents = [data.aws_iam_policy_document.kms_account_root.json]

  statement {
    sid = "CloudWatchLogsUseForThisAccount"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "eks" {
  description             = "${local.name}: envelope encryption of Kubernetes secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_account_root.json
}

resource "aws_kms_alias" "eks" {
  name          = "alias/${local.name}-eks"
  target_key_id = aws_kms_key.eks.key_id
}

resource "aws_kms_key" "rds" {
  description             = "${local.name}: RDS storage, Performance Insights and the master user secret"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_account_root.json
}

resource "aws_kms_alias" "rds" {
  name          = "alias/${local.name}-rds"
  target_key_id = aws_kms_key.rds.key_id
}

resource "aws_kms_key" "logs" {
  description             = "${local.name}: CloudWatch log groups (VPC flow logs, EKS control plane, RDS)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_logs.json
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${local.name}-logs"
  target_key_id = aws_kms_key.logs.key_id
}
