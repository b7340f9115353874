################################################################################
# What the GitHub Actions roles may do (github-actions.tf): the services that
# ../ manages, in its region, and IAM only on this project's own roles
#   read:  both roles (plan and apply refresh every resource); no secret value
#          but the application role's secret, which a refresh reads back.
#   write: the apply role; IAM writes only on roles and policies tagged
#          Project = var.name (../ tags everything it creates so), never on the
#          two GitHub roles themselves.
# Neither AdministratorAccess nor the account-wide ReadOnlyAccess is attached.
################################################################################

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  # The services ../ creates resources in (VPC, EKS, RDS, KMS, CloudWatch Logs, Secrets Manager, and the
  # rotation function's Lambda through CloudFormation and the Serverless Application Repository).
  regional_services = ["ec2", "eks", "rds", "kms", "logs", "secretsmanager", "lambda", "cloudformation", "serverlessrepo"]
  # The services whose roles ../ passes (iam:PassRole) and whose service-linked roles their first use creates.
  passed_to_services = [
    "eks.amazonaws.com",
    "ec2.amazonaws.com",
    "rds.amazonaws.com",
    "monitoring.rds.amazonaws.com",
    "lambda.amazonaws.com",
    "vpc-flow-logs.amazonaws.com",
  ]
  service_linked_roles = [
    "eks.amazonaws.com",
    "eks-nodegroup.amazonaws.com",
    "rds.amazonaws.com",
    "autoscaling.amazonaws.com",
    "elasticloadbalancing.amazonaws.com",
  ]
  # What this file and github-actions.tf create carries the project's tag too (default_tags): the apply role
  # must not widen its own permissions through them.
  github_iam_arns = [
    "arn:${local.partition}:iam::${local.account_id}:role/${var.name}-github-*",
    "arn:${local.partition}:iam::${local.account_id}:policy/${var.name}-github-*",
    "arn:${local.partition}:iam::${local.account_id}:oidc-provider/${local.github_oidc_host}",
  ]
}

data "aws_iam_policy_document" "github_read" {
  #checkov:skip=CKV_AWS_356:Describe, Get and List calls of these services take no resource ARN (or any ARN); writes are in github_write.
  statement {
    sid = "ReadWhatTheConfigurationManages"
    actions = [
      "ec2:Describe*",
      "ec2:GetManagedPrefixListEntries",
      "eks:Describe*",
      "eks:List*",
      "rds:Describe*",
      "rds:ListTagsForResource",
      "kms:Describe*",
      "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus",
      "kms:List*",
      "logs:Describe*",
      "logs:ListTagsForResource",
      "logs:ListTagsLogGroup",
      "secretsmanager:DescribeSecret",
      "secretsmanager:GetResourcePolicy",
      "secretsmanager:ListSecretVersionIds",
      "lambda:GetFunction",
      "lambda:GetFunctionConfiguration",
      "lambda:GetPolicy",
      "lambda:ListTags",
      "cloudformation:Describe*",
      "cloudformation:GetTemplate*",
      "cloudformation:List*",
      "serverlessrepo:GetApplication",
      "serverlessrepo:ListApplicationVersions",
      "iam:GetRole",
      "iam:GetRolePolicy",
      "iam:GetPolicy",
      "iam:GetPolicyVersion",
      "iam:GetOpenIDConnectProvider",
      "iam:ListAttachedRolePolicies",
      "iam:ListRolePolicies",
      "iam:ListRoleTags",
      "iam:ListPolicyTags",
      "iam:ListPolicyVersions",
      "iam:ListInstanceProfilesForRole",
      "iam:ListOpenIDConnectProviders",
    ]
    resources = ["*"]
  }

  # The EKS-optimized AMI's release version (a public parameter AWS publishes).
  statement {
    sid       = "ReadEksAmiParameters"
    actions   = ["ssm:GetParameter", "ssm:GetParameters"]
    resources = ["arn:${local.partition}:ssm:${var.region}::parameter/aws/service/*"]
  }

  # A refresh of aws_secretsmanager_secret_version reads the version back; the application role's secret is
  # the only one ../ writes a version of (the master secret is RDS's own).
  statement {
    sid       = "ReadTheApplicationRoleSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = ["arn:${local.partition}:secretsmanager:${var.region}:${local.account_id}:secret:${var.name}-*-db-app-*"]
  }

  statement {
    sid       = "DecryptThatSecretThroughSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = ["arn:${local.partition}:kms:${var.region}:${local.account_id}:key/*"]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "github_write" {
  statement {
    sid       = "ChangeTheConfigurationsServicesInItsRegion"
    actions   = [for service in local.regional_services : "${service}:*"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  statement {
    sid       = "ReadEksAmiParameters"
    actions   = ["ssm:GetParameter", "ssm:GetParameters"]
    resources = ["arn:${local.partition}:ssm:${var.region}::parameter/aws/service/*"]
  }

  # CloudFormation reads the rotation function's template from the Serverless Application Repository's bucket.
  statement {
    sid       = "ReadServerlessApplicationTemplates"
    actions   = ["s3:GetObject"]
    resources = ["arn:${local.partition}:s3:::awsserverlessrepo-changesets-*/*"]
  }

  statement {
    sid = "CreateTaggedRolesAndPolicies"
    actions = [
      "iam:CreateRole",
      "iam:CreatePolicy",
      "iam:CreateOpenIDConnectProvider",
      "iam:TagRole",
      "iam:TagPolicy",
      "iam:TagOpenIDConnectProvider",
    ]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/Project"
      values   = [var.name]
    }
  }

  statement {
    sid = "ChangeThisProjectsRolesAndPolicies"
    actions = [
      "iam:AttachRolePolicy",
      "iam:DetachRolePolicy",
      "iam:PutRolePolicy",
      "iam:DeleteRolePolicy",
      "iam:UpdateRole",
      "iam:UpdateRoleDescription",
      "iam:UpdateAssumeRolePolicy",
      "iam:DeleteRole",
      "iam:UntagRole",
      "iam:CreatePolicyVersion",
      "iam:DeletePolicyVersion",
      "iam:SetDefaultPolicyVersion",
      "iam:DeletePolicy",
      "iam:UntagPolicy",
      "iam:AddClientIDToOpenIDConnectProvider",
      "iam:RemoveClientIDFromOpenIDConnectProvider",
      "iam:UpdateOpenIDConnectProviderThumbprint",
      "iam:DeleteOpenIDConnectProvider",
      "iam:UntagOpenIDConnectProvider",
    ]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Project"
      values   = [var.name]
    }
  }

  statement {
    sid       = "PassThisProjectsRolesToItsServices"
    actions   = ["iam:PassRole"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Project"
      values   = [var.name]
    }

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = local.passed_to_services
    }
  }

  statement {
    sid       = "CreateServiceLinkedRolesOnFirstUse"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = local.service_linked_roles
    }
  }

  # The roles, policies and OIDC provider of this workflow carry the project's tag too: nothing above may
  # change them.
  statement {
    sid       = "NeverChangeTheGitHubRoles"
    effect    = "Deny"
    actions   = ["iam:*"]
    resources = local.github_iam_arns
  }

  # kms:* above covers every key of the region; the state's key is used, never administered.
  statement {
    sid    = "NeverAdministerTheStateKey"
    effect = "Deny"
    actions = [
      "kms:ScheduleKeyDeletion",
      "kms:DisableKey",
      "kms:DisableKeyRotation",
      "kms:PutKeyPolicy",
      "kms:CreateGrant",
      "kms:UpdateKeyDescription",
      "kms:TagResource",
      "kms:UntagResource",
    ]
    resources = [aws_kms_key.state.arn]
  }
}

resource "aws_iam_policy" "github_read" {
  name        = "${var.name}-github-read"
  description = "Read what infrastructure/ manages (tofu plan and the refresh of tofu apply) from ${var.github_repository}"
  policy      = data.aws_iam_policy_document.github_read.json
}

resource "aws_iam_policy" "github_write" {
  name        = "${var.name}-github-write"
  description = "Change what infrastructure/ manages (tofu apply) from the ${var.github_environment} environment of ${var.github_repository}"
  policy      = data.aws_iam_policy_document.github_write.json
}
