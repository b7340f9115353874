################################################################################
# RDS PostgreSQL: private, encrypted, Multi-AZ, TLS only
################################################################################

locals {
  db_major_version = split(".", var.db_engine_version)[0]
}

# Reachable on 5432 from the EKS node security group (pods use the node ENIs)
# and from nothing else. No egress rules: the database starts no connections.
resource "aws_security_group" "db" {
  #checkov:skip=CKV2_AWS_5:Attached to the RDS instance created inside module.db, which the scanner does not read offline.
  name_prefix = "${local.name}-db-"
  description = "PostgreSQL ${local.name}: 5432 from the EKS nodes only"
  vpc_id      = module.vpc.vpc_id

  tags = merge(local.tags, { Name = "${local.name}-db" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "db_from_nodes" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the EKS node security group"
  referenced_security_group_id = module.eks.node_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

module "db" {
  #checkov:skip=CKV_TF_1:Registry modules are pinned to an exact version; the registry protocol has no commit hash to pin.
  source  = "terraform-aws-modules/rds/aws"
  version = "7.2.2"

  identifier = "${local.name}-postgres"

  engine               = "postgres"
  engine_version       = var.db_engine_version
  family               = "postgres${local.db_major_version}"
  major_engine_version = local.db_major_version
  instance_class       = var.db_instance_class

  storage_type          = "gp3"
  allocated_storage     = var.db_allocated_storage_gib
  max_allocated_storage = var.db_max_allocated_storage_gib
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.rds.arn

  db_name  = var.db_name
  username = var.db_username
  port     = 5432

  # RDS generates the master password and keeps it in Secrets Manager,
  # encrypted with our key; it never appears in the plan or the state.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.rds.arn

  iam_database_authentication_enabled = var.db_iam_authentication_enabled

  multi_az               = var.db_multi_az
  db_subnet_group_name   = module.vpc.database_subnet_group_name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  deletion_protection              = var.db_deletion_protection
  skip_final_snapshot              = var.db_skip_final_snapshot
  final_snapshot_identifier_prefix = "${local.name}-final"
  backup_retention_period          = var.db_backup_retention_days
  backup_window                    = "03:00-04:00"
  maintenance_window               = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot            = true
  # Automated backups outlive an accidental instance deletion until they expire.
  delete_automated_backups = false

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  apply_immediately           = var.db_apply_immediately

  performance_insights_enabled          = var.db_performance_insights_enabled
  performance_insights_retention_period = 7
  performance_insights_kms_key_id       = var.db_performance_insights_enabled ? aws_kms_key.rds.arn : null

  monitoring_interval             = var.db_monitoring_interval
  create_monitoring_role          = var.db_monitoring_interval > 0
  monitoring_role_name            = "${local.name}-rdsmon"
  monitoring_role_use_name_prefix = true

  enabled_cloudwatch_logs_exports        = ["postgresql", "upgrade"]
  create_cloudwatch_log_group            = true
  cloudwatch_log_group_retention_in_days = var.log_retention_days
  cloudwatch_log_group_kms_key_id        = aws_kms_key.logs.arn

  # PostgreSQL has no option groups.
  create_db_option_group    = false
  create_db_parameter_group = true
  parameters = [
    # Refuse any connection that is not TLS.
    {
      name  = "rds.force_ssl"
      value = "1"
    },
    # Log statements slower than one second.
    {
      name  = "log_min_duration_statement"
      value = "1000"
    },
  ]

  tags = local.tags
}
