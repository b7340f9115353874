################################################################################
# GitHub Actions (.github/workflows/provision.yml) reaches AWS through OIDC:
# no access key exists. Two roles, each trusted by one kind of job of this
# repository only:
#   plan:  pull_request jobs and pushes to main (the plan the apply job applies);
#          reads what ../ manages (github-policies.tf) and the state, holds the lock.
#   apply: jobs of the protected environment (deployments from main only);
#          changes what ../ manages and nothing else (github-policies.tf).
################################################################################

variable "github_repository" {
  description = "The GitHub repository, owner/name, whose workflows may assume the roles."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$", var.github_repository))
    error_message = "Give the repository as owner/name, for example octo-org/flask-api."
  }
}

variable "github_environment" {
  description = "The protected GitHub environment of the apply job (deployments from main only, a required reviewer), named like the environment it provisions."
  type        = string
  default     = "production"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.github_environment))
    error_message = "The environment name may hold letters, digits, hyphens and underscores."
  }

  validation {
    condition     = contains(var.environments, var.github_environment)
    error_message = "The GitHub environment names the environment it provisions: one of var.environments."
  }
}

variable "github_oidc_provider_arn" {
  description = "ARN of the account's existing token.actions.githubusercontent.com OIDC provider; null creates it (an account holds one)."
  type        = string
  default     = null

  validation {
    condition     = var.github_oidc_provider_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/token\\.actions\\.githubusercontent\\.com$", var.github_oidc_provider_arn))
    error_message = "Give the ARN of the token.actions.githubusercontent.com OIDC provider, or null to create it."
  }
}

locals {
  github_oidc_host         = "token.actions.githubusercontent.com"
  github_oidc_provider_arn = var.github_oidc_provider_arn == null ? aws_iam_openid_connect_provider.github[0].arn : var.github_oidc_provider_arn
  # The subject claims GitHub gives each kind of job: nothing else may assume the roles. Pushes to main
  # plan too: the apply job applies that plan file, after the environment's reviewer has read it.
  github_subjects = {
    plan  = ["repo:${var.github_repository}:pull_request", "repo:${var.github_repository}:ref:refs/heads/main"]
    apply = ["repo:${var.github_repository}:environment:${var.github_environment}"]
  }
  # The state the workflow provisions: the environment of the same name as the protected GitHub environment
  # (one of var.environments, backend_config), and its lock file (use_lockfile = true).
  state_key = "${var.name}/${var.github_environment}/terraform.tfstate"
}

resource "aws_iam_openid_connect_provider" "github" {
  count = var.github_oidc_provider_arn == null ? 1 : 0

  url            = "https://${local.github_oidc_host}"
  client_id_list = ["sts.amazonaws.com"]
}

# Trust: a token GitHub issued for this repository, for AWS STS, from a pull
# request (plan) or from a job of the protected environment (apply).
data "aws_iam_policy_document" "github_trust" {
  for_each = local.github_subjects

  statement {
    sid     = "GitHubActionsOfThisRepository"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_host}:sub"
      values   = each.value
    }
  }
}

resource "aws_iam_role" "github_plan" {
  name                 = "${var.name}-github-plan"
  description          = "tofu plan from pull requests of ${var.github_repository}"
  assume_role_policy   = data.aws_iam_policy_document.github_trust["plan"].json
  max_session_duration = 3600
}

resource "aws_iam_role" "github_apply" {
  name                 = "${var.name}-github-apply"
  description          = "tofu apply from the ${var.github_environment} environment of ${var.github_repository}"
  assume_role_policy   = data.aws_iam_policy_document.github_trust["apply"].json
  max_session_duration = 3600
}

# plan refreshes every resource of ../: it reads them (github-policies.tf). apply refreshes too, then
# changes them.
resource "aws_iam_role_policy_attachment" "github_plan_read" {
  role       = aws_iam_role.github_plan.name
  policy_arn = aws_iam_policy.github_read.arn
}

resource "aws_iam_role_policy_attachment" "github_apply_read" {
  role       = aws_iam_role.github_apply.name
  policy_arn = aws_iam_policy.github_read.arn
}

resource "aws_iam_role_policy_attachment" "github_apply_write" {
  role       = aws_iam_role.github_apply.name
  policy_arn = aws_iam_policy.github_write.arn
}

# Both roles read the state; both take the lock file; only apply writes the state.
data "aws_iam_policy_document" "github_state" {
  for_each = toset(["plan", "apply"])

  statement {
    sid       = "ListStateBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.state.arn]
  }

  statement {
    sid       = "ReadState"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.state.arn}/${local.state_key}"]
  }

  statement {
    sid       = "HoldTheLock"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.state.arn}/${local.state_key}.tflock"]
  }

  dynamic "statement" {
    for_each = each.key == "apply" ? [1] : []
    content {
      sid       = "WriteState"
      actions   = ["s3:PutObject"]
      resources = ["${aws_s3_bucket.state.arn}/${local.state_key}"]
    }
  }

  statement {
    sid       = "UseStateKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [aws_kms_key.state.arn]
  }
}

resource "aws_iam_role_policy" "github_plan_state" {
  name   = "opentofu-state"
  role   = aws_iam_role.github_plan.id
  policy = data.aws_iam_policy_document.github_state["plan"].json
}

resource "aws_iam_role_policy" "github_apply_state" {
  name   = "opentofu-state"
  role   = aws_iam_role.github_apply.id
  policy = data.aws_iam_policy_document.github_state["apply"].json
}

output "github_plan_role_arn" {
  description = "Role of the plan job: the repository variable AWS_PLAN_ROLE_ARN."
  value       = aws_iam_role.github_plan.arn
}

output "github_apply_role_arn" {
  description = "Role of the apply job: the variable AWS_APPLY_ROLE_ARN of the protected environment."
  value       = aws_iam_role.github_apply.arn
}
