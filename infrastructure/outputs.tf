################################################################################
# Outputs read by the EKS overlay of kube_config and by the readme's commands
################################################################################

output "region" {
  description = "AWS region of every resource."
  value       = var.region
}

output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "Endpoint of the Kubernetes API server."
  value       = module.eks.cluster_endpoint
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "vpc_id" {
  description = "ID of the VPC (the load balancer controller's vpcId)."
  value       = module.vpc.vpc_id
}

output "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  value       = module.vpc.vpc_cidr_block
}

output "node_security_group_id" {
  description = "Security group of the EKS nodes (the only source the database accepts)."
  value       = module.eks.node_security_group_id
}

output "lb_controller_role_arn" {
  description = "IAM role the AWS Load Balancer Controller receives through Pod Identity (created or given)."
  value       = var.lb_controller_iam_role_arn == null ? module.lb_controller_pod_identity.iam_role_arn : var.lb_controller_iam_role_arn
}

output "db_endpoint" {
  description = "Host name of the PostgreSQL instance (without the port)."
  value       = module.db.db_instance_address
}

output "db_port" {
  description = "Port of the PostgreSQL instance."
  value       = module.db.db_instance_port
}

output "db_name" {
  description = "Name of the application database."
  value       = var.db_name
}

output "db_master_secret_arn" {
  description = "ARN of the Secrets Manager secret (JSON with username and password) that RDS manages for the master user."
  value       = module.db.db_instance_master_user_secret_arn
}

output "db_app_secret_arn" {
  description = "ARN of the Secrets Manager secret of the application's database role (rotated; synced by External Secrets Operator)."
  value       = aws_secretsmanager_secret.db_app.arn
}

output "db_secret_store_role_arns" {
  description = "IAM roles of the two SecretStores (app, migration): the eks.amazonaws.com/role-arn annotation of their service accounts."
  value       = { for key, role in aws_iam_role.secret_reader : key => role.arn }
}

output "ebs_kms_key_arn" {
  description = "ARN of the KMS key that encrypts the EBS volumes of PersistentVolumeClaims (the StorageClass's kmsKeyId)."
  value       = aws_kms_key.ebs.arn
}

output "ebs_csi_role_arn" {
  description = "IAM role the EBS CSI driver's controller (kube-system/ebs-csi-controller-sa) receives through Pod Identity."
  value       = module.ebs_csi_pod_identity.iam_role_arn
}

output "cluster_autoscaler_role_arn" {
  description = "IAM role the Cluster Autoscaler (kube-system/cluster-autoscaler) receives through Pod Identity."
  value       = module.cluster_autoscaler_pod_identity.iam_role_arn
}

# Everything the EKS overlay needs from this configuration, in the format of
# kube_config/overlays/eks/infrastructure.env (kustomize replacements read it):
#   tofu -chdir=infrastructure output -raw eks_overlay_env > kube_config/overlays/eks/infrastructure.env
output "eks_overlay_env" {
  description = "Contents of kube_config/overlays/eks/infrastructure.env: region, certificate, secret ARNs, EBS key, subnet CIDRs."
  value = join("\n", concat(
    [
      "REGION=${var.region}",
      "CERTIFICATE_ARN=${var.alb_certificate_arn}",
      "DB_APP_SECRET_ARN=${aws_secretsmanager_secret.db_app.arn}",
      "DB_MASTER_SECRET_ARN=${module.db.db_instance_master_user_secret_arn}",
      "EBS_KMS_KEY_ARN=${aws_kms_key.ebs.arn}",
      "DB_APP_SECRET_STORE_ROLE_ARN=${aws_iam_role.secret_reader["app"].arn}",
      "DB_MIGRATION_SECRET_STORE_ROLE_ARN=${aws_iam_role.secret_reader["migration"].arn}",
    ],
    [for i, cidr in module.vpc.public_subnets_cidr_blocks : "PUBLIC_SUBNET_CIDR_${i + 1}=${cidr}"],
    [for i, cidr in module.vpc.database_subnets_cidr_blocks : "DATABASE_SUBNET_CIDR_${i + 1}=${cidr}"],
    # The ALB's nodes sit in the public subnets: the app believes X-Forwarded-For from them only.
    ["PUBLIC_SUBNET_CIDRS=${join(",", module.vpc.public_subnets_cidr_blocks)}"],
    [""],
  ))
}
