################################################################################
# Database credentials of the application: its own role, rotated, synced into
# the cluster by External Secrets Operator through EKS Pod Identity
################################################################################

# The application logs in as var.db_app_username, a role the migration
# creates with the row rights it uses on its tables only. Its credentials are a
# Secrets Manager secret in the format of the AWS rotation functions; the
# first password is generated here as an ephemeral value and written with a
# write-only argument, so it never lands in the plan or the state. Secrets
# Manager then rotates it every var.db_app_password_rotation_days days with
# the AWS-published single-user rotation function for RDS PostgreSQL.
resource "aws_secretsmanager_secret" "db_app" {
  #checkov:skip=CKV2_AWS_57:Rotation is configured below (aws_secretsmanager_secret_rotation.db_app), which the check does not follow through the application stack.
  name_prefix             = "${local.name}-db-app-"
  description             = "${local.name}: credentials of the application's database role (${var.db_app_username})"
  kms_key_id              = aws_kms_key.rds.arn
  recovery_window_in_days = 7
}

ephemeral "aws_secretsmanager_random_password" "db_app" {
  password_length     = 40
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret_version" "db_app" {
  secret_id = aws_secretsmanager_secret.db_app.id
  secret_string_wo = jsonencode({
    engine   = "postgres"
    host     = module.db.db_instance_address
    port     = module.db.db_instance_port
    dbname   = var.db_name
    username = var.db_app_username
    password = ephemeral.aws_secretsmanager_random_password.db_app.random_password
  })
  # Written once: rotation owns every later version, and a second write here would replace the password
  # the database role has with one it does not (hence ignore_changes below: raising this number does
  # nothing). A new password comes from `aws secretsmanager rotate-secret` (docs/aws.md).
  secret_string_wo_version = 1

  lifecycle {
    ignore_changes = [secret_string_wo_version]
  }
}

# The rotation function runs in the private subnets: it reaches PostgreSQL on
# 5432 and the Secrets Manager API on 443 (its interface endpoint, endpoints.tf; the NAT gateway when
# vpc_interface_endpoints_enabled is false).
resource "aws_security_group" "db_rotation" {
  #checkov:skip=CKV2_AWS_5:Attached to the rotation function that the application stack below creates, which the scanner does not read.
  name_prefix = "${local.name}-db-rotation-"
  description = "Secrets Manager rotation function of ${local.name}: PostgreSQL and the Secrets Manager API only"
  vpc_id      = module.vpc.vpc_id

  tags = merge(local.tags, { Name = "${local.name}-db-rotation" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_egress_rule" "db_rotation_to_db" {
  security_group_id            = aws_security_group.db_rotation.id
  description                  = "PostgreSQL of ${local.name}"
  referenced_security_group_id = aws_security_group.db.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

# With the interface endpoints (endpoints.tf), secretsmanager.<region>.amazonaws.com resolves to the
# endpoint's addresses in the VPC: HTTPS to its security group is all the function needs.
resource "aws_vpc_security_group_egress_rule" "db_rotation_to_secrets_manager_endpoint" {
  count = var.vpc_interface_endpoints_enabled ? 1 : 0

  security_group_id            = aws_security_group.db_rotation.id
  description                  = "HTTPS to the Secrets Manager interface endpoint"
  referenced_security_group_id = module.vpc_endpoints.security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
}

#trivy:ignore:AVD-AWS-0104 Only without the interface endpoints: the Secrets Manager API's public regional endpoint, through the NAT gateway; HTTPS only.
resource "aws_vpc_security_group_egress_rule" "db_rotation_to_secrets_manager" {
  count = var.vpc_interface_endpoints_enabled ? 0 : 1

  security_group_id = aws_security_group.db_rotation.id
  description       = "HTTPS to the Secrets Manager API (regional endpoint, through the NAT gateway)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_ingress_rule" "db_from_rotation" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the Secrets Manager rotation function"
  referenced_security_group_id = aws_security_group.db_rotation.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

data "aws_serverlessapplicationrepository_application" "db_rotation" {
  application_id = "arn:${local.partition}:serverlessrepo:us-east-1:297356227824:applications/SecretsManagerRDSPostgreSQLRotationSingleUser"
}

resource "aws_serverlessapplicationrepository_cloudformation_stack" "db_rotation" {
  name             = "${local.name}-db-app-rotation"
  application_id   = data.aws_serverlessapplicationrepository_application.db_rotation.application_id
  semantic_version = data.aws_serverlessapplicationrepository_application.db_rotation.semantic_version
  capabilities     = data.aws_serverlessapplicationrepository_application.db_rotation.required_capabilities

  parameters = {
    functionName        = "${local.name}-db-app-rotation"
    endpoint            = "https://secretsmanager.${var.region}.${data.aws_partition.current.dns_suffix}"
    kmsKeyArn           = aws_kms_key.rds.arn
    vpcSubnetIds        = join(",", module.vpc.private_subnets)
    vpcSecurityGroupIds = aws_security_group.db_rotation.id
  }

  tags = local.tags
}

resource "aws_secretsmanager_secret_rotation" "db_app" {
  secret_id           = aws_secretsmanager_secret.db_app.id
  rotation_lambda_arn = aws_serverlessapplicationrepository_cloudformation_stack.db_rotation.outputs["RotationLambdaARN"]
  # The role exists once the first pod's migration ran: the first rotation waits for the schedule.
  rotate_immediately = false

  rotation_rules {
    automatically_after_days = var.db_app_password_rotation_days
  }

  depends_on = [aws_secretsmanager_secret_version.db_app]
}

################################################################################
# Who may read the two database secrets: one IAM role per SecretStore, each
# trusted by one Kubernetes service account only
################################################################################

# External Secrets Operator authenticates each SecretStore with the token of a
# service account the store names (`auth.jwt.serviceAccountRef`, IAM roles for
# service accounts): a SecretStore can only name service accounts of its own
# namespace, and each role below trusts one namespace/name pair. The operator
# itself gets no AWS identity, so a SecretStore without `auth` reads nothing.
#   app:       the application's SecretStore; the application role's secret only.
#   migration: the migration's SecretStore; the master user's secret (RDS's
#              own) and the application role's (host, and the role it creates).
locals {
  secret_readers = {
    app = {
      service_account = var.db_secret_store_service_accounts.app
      secret_arns     = [aws_secretsmanager_secret.db_app.arn]
    }
    migration = {
      service_account = var.db_secret_store_service_accounts.migration
      secret_arns     = [module.db.db_instance_master_user_secret_arn, aws_secretsmanager_secret.db_app.arn]
    }
  }
  oidc_issuer = replace(module.eks.cluster_oidc_issuer_url, "https://", "")
}

data "aws_iam_policy_document" "secret_reader_trust" {
  for_each = local.secret_readers

  statement {
    sid     = "OneServiceAccount"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [module.eks.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${each.value.service_account.namespace}:${each.value.service_account.name}"]
    }
  }
}

# Named ARNs only: no ListSecrets, no BatchGetSecretValue, nothing on "*".
data "aws_iam_policy_document" "secret_reader" {
  for_each = local.secret_readers

  statement {
    sid       = "ReadTheNamedSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = each.value.secret_arns
  }

  statement {
    sid       = "DecryptThemThroughSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.rds.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "secret_reader" {
  for_each = local.secret_readers

  name_prefix          = "${local.name}-${each.key}-secrets-"
  description          = "${local.name}: the ${each.key} SecretStore (${each.value.service_account.namespace}/${each.value.service_account.name})"
  assume_role_policy   = data.aws_iam_policy_document.secret_reader_trust[each.key].json
  max_session_duration = 3600

  tags = local.tags
}

resource "aws_iam_role_policy" "secret_reader" {
  for_each = local.secret_readers

  name   = "read-database-secrets"
  role   = aws_iam_role.secret_reader[each.key].id
  policy = data.aws_iam_policy_document.secret_reader[each.key].json
}
