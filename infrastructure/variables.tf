################################################################################
# General
################################################################################

variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "The region must look like an AWS region name, for example us-east-1 or eu-west-1."
  }
}

variable "name" {
  description = "Short project name; prefixes every resource name (together with the environment)."
  type        = string
  default     = "flask-api"

  validation {
    # With the environment, keeps IAM role name prefixes such as "<name>-<environment>-aws-lbc-"
    # within the 38 characters IAM allows.
    condition     = can(regex("^[a-z][a-z0-9-]{1,13}[a-z0-9]$", var.name))
    error_message = "The name must be 3-15 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "environment" {
  description = "Environment name, for example production or staging; part of every resource name and tag."
  type        = string
  default     = "production"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.environment))
    error_message = "The environment must be 2-12 lowercase letters or digits, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags applied to every resource (merged with Project, Environment and ManagedBy)."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention in days of the CloudWatch log groups (VPC flow logs, EKS control plane, RDS)."
  type        = number
  default     = 90

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "The retention must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

################################################################################
# Network
################################################################################

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC; private /20s, public, database and intra /24s are carved from it (for a /16)."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && contains(["16", "17", "18"], try(split("/", var.vpc_cidr)[1], ""))
    error_message = "The VPC CIDR must be a valid IPv4 CIDR with a prefix length of /16, /17 or /18."
  }
}

variable "availability_zone_ids" {
  description = "The three availability zone IDs to use (for example use1-az1, use1-az2, use1-az4: `aws ec2 describe-availability-zones` shows the IDs of this account); empty picks the first three available IDs that EKS supports."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zone_ids) == 0 || (length(distinct(var.availability_zone_ids)) == 3 && alltrue([for id in var.availability_zone_ids : can(regex("^[a-z]{2,5}[0-9]-az[0-9]+$", id))]))
    error_message = "Give exactly three distinct availability zone IDs such as use1-az1 (IDs, not names such as us-east-1a), or none."
  }

  validation {
    condition     = length(setintersection(var.availability_zone_ids, var.eks_unsupported_zone_ids)) == 0
    error_message = "EKS does not place control-plane subnets in these zone IDs: choose others."
  }
}

variable "eks_unsupported_zone_ids" {
  description = "Zone IDs where EKS refuses cluster subnets (the EKS documentation lists them); never chosen."
  type        = list(string)
  default     = ["use1-az3", "usw1-az2", "cac1-az3"]
}

variable "one_nat_gateway_per_az" {
  description = "One NAT gateway per availability zone, so losing a zone stops only that zone's egress; false shares one NAT gateway (cheaper; for dev and staging, see docs/aws.md for the cost)."
  type        = bool
  default     = true
}

variable "vpc_interface_endpoints_enabled" {
  description = "Create the interface endpoints of endpoints.tf (ECR api and dkr, STS, Secrets Manager, EKS Pod Identity) in every private subnet; the S3 gateway endpoint is always created (it has no hourly price)."
  type        = bool
  default     = true
}

################################################################################
# EKS
################################################################################

variable "kubernetes_version" {
  description = "Kubernetes minor version of the EKS control plane and node group (one under EKS standard support)."
  type        = string
  default     = "1.35"

  validation {
    condition     = can(regex("^1\\.(3[4-9])$", var.kubernetes_version))
    error_message = "The Kubernetes version must be a minor version from 1.34 on, for example 1.35."
  }
}

variable "cluster_endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the public Kubernetes API endpoint (for example your office or VPN egress /32). An empty list turns the public endpoint off; the private endpoint is always on."
  type        = list(string)

  validation {
    condition     = alltrue([for cidr in var.cluster_endpoint_public_access_cidrs : can(cidrhost(cidr, 0))])
    error_message = "Every entry must be a valid CIDR, for example 203.0.113.10/32."
  }

  validation {
    # 0.0.0.0/0 and ::/0, but also the whole internet split into a few short prefixes.
    condition = alltrue([
      for cidr in var.cluster_endpoint_public_access_cidrs :
      try(tonumber(split("/", cidr)[1]) >= (strcontains(cidr, ":") ? 16 : 8), false)
    ])
    error_message = "The public endpoint must not be open to the internet: 0.0.0.0/0, ::/0 and IPv4 prefixes shorter than /8 (IPv6 /16) are refused."
  }
}

variable "cluster_admin_principal_arns" {
  description = "IAM role or user ARNs given cluster-admin through EKS access entries (the cluster creator gets no implicit access)."
  type        = list(string)

  validation {
    condition     = length(var.cluster_admin_principal_arns) > 0
    error_message = "Give at least one admin principal ARN, or nobody can use kubectl on the cluster."
  }

  validation {
    condition     = alltrue([for arn in var.cluster_admin_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/.+$", arn))])
    error_message = "Every entry must be an IAM role or user ARN, for example arn:aws:iam::123456789012:role/Admin."
  }
}

variable "node_instance_types" {
  description = "EC2 instance types of the managed node group (on-demand, AL2023, x86_64)."
  type        = list(string)
  default     = ["m7i.large"]

  validation {
    condition     = length(var.node_instance_types) > 0
    error_message = "Give at least one instance type."
  }
}

variable "node_min_size" {
  description = "Minimum number of nodes over the three zones' node groups (node-groups.tf splits it; 3 keeps one node in each zone)."
  type        = number
  default     = 3

  validation {
    condition     = var.node_min_size >= 1
    error_message = "Keep at least one node."
  }
}

variable "node_desired_size" {
  description = "Initial number of nodes over the three zones' node groups (node-groups.tf splits it); the Cluster Autoscaler changes it afterwards (the node groups ignore later changes of this variable)."
  type        = number
  default     = 3

  validation {
    condition     = var.node_desired_size >= 1
    error_message = "Start with at least one node."
  }
}

variable "node_max_size" {
  description = "Maximum number of nodes over the three zones' node groups (node-groups.tf splits it), up to which the Cluster Autoscaler grows them: the API at its HPA maximum and the platform (python -m tools.capacity computes it; docs/aws.md)."
  type        = number
  default     = 9

  validation {
    condition     = var.node_max_size >= 3 && var.node_max_size <= 100
    error_message = "The maximum must be between 3 and 100: at least one node in each of the three zones."
  }
}

variable "node_disk_size_gib" {
  description = "Root volume size of each node in GiB (gp3, encrypted)."
  type        = number
  default     = 30

  validation {
    condition     = var.node_disk_size_gib >= 20
    error_message = "AL2023 nodes need at least 20 GiB."
  }
}

variable "alb_certificate_arn" {
  description = "ARN of the ACM certificate the ALB serves HTTPS with (in this region); HTTP only redirects to HTTPS."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]+$", var.alb_certificate_arn))
    error_message = "Give the ARN of an ACM certificate, for example arn:aws:acm:us-east-1:123456789012:certificate/<id>."
  }
}

################################################################################
# RDS PostgreSQL
################################################################################

variable "db_engine_version" {
  description = "PostgreSQL engine version: a major (\"17\") takes the region's default minor, auto-upgraded in the maintenance window."
  type        = string
  default     = "18"

  validation {
    condition     = can(regex("^1[678](\\.[0-9]+)?$", var.db_engine_version))
    error_message = "Use PostgreSQL 16, 17 or 18, for example \"18\" or \"18.1\"."
  }
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"

  validation {
    condition     = startswith(var.db_instance_class, "db.")
    error_message = "The instance class must start with db., for example db.t4g.medium."
  }
}

variable "db_allocated_storage_gib" {
  description = "Initial gp3 storage of the database in GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.db_allocated_storage_gib >= 20 && var.db_allocated_storage_gib <= 65536
    error_message = "Storage must be between 20 and 65536 GiB."
  }
}

variable "db_max_allocated_storage_gib" {
  description = "Upper bound for storage autoscaling in GiB (0 turns autoscaling off)."
  type        = number
  default     = 100

  validation {
    condition     = var.db_max_allocated_storage_gib == 0 || var.db_max_allocated_storage_gib >= var.db_allocated_storage_gib
    error_message = "The autoscaling bound must be 0 or at least the allocated storage."
  }
}

variable "db_name" {
  description = "Name of the application database created in the instance."
  type        = string
  default     = "flask_api"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_name))
    error_message = "The database name must start with a letter and hold only lowercase letters, digits and underscores."
  }
}

variable "db_username" {
  description = "Master user name; its password is generated and kept in Secrets Manager by RDS."
  type        = string
  default     = "flask_api_admin"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_username)) && !contains(["postgres", "rdsadmin", "admin"], var.db_username)
    error_message = "The user name must start with a letter, hold only lowercase letters, digits and underscores, and not be a reserved name."
  }
}

variable "db_app_username" {
  description = "The application's own database role (rows of its tables only), created by the migration; its password lives in Secrets Manager and is rotated there."
  type        = string
  default     = "flask_api_app"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,50}$", var.db_app_username)) && var.db_app_username != var.db_username
    error_message = "The role name must start with a letter, hold lowercase letters, digits and underscores, and differ from db_username."
  }
}

variable "db_app_password_rotation_days" {
  description = "Days between two rotations of the application role's password."
  type        = number
  default     = 30

  validation {
    condition     = var.db_app_password_rotation_days >= 1 && var.db_app_password_rotation_days <= 365
    error_message = "Rotate at least once a year and at most once a day."
  }
}

variable "db_multi_az" {
  description = "Run a synchronous standby in a second availability zone (automatic failover)."
  type        = bool
  default     = true
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database instance; set to false and apply before a teardown."
  type        = bool
  default     = true
}

variable "db_skip_final_snapshot" {
  description = "Delete the database without a final snapshot (only for throw-away environments)."
  type        = bool
  default     = false
}

variable "db_backup_retention_days" {
  description = "Days of automated backups and point-in-time recovery (0 turns backups off)."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 0 && var.db_backup_retention_days <= 35
    error_message = "Backup retention must be between 0 and 35 days."
  }
}

variable "db_iam_authentication_enabled" {
  description = "Also accept IAM database authentication tokens (password authentication stays on)."
  type        = bool
  default     = false
}

variable "db_performance_insights_enabled" {
  description = "Turn on Performance Insights (7 days of retention, the free tier)."
  type        = bool
  default     = true
}

variable "db_monitoring_interval" {
  description = "Enhanced Monitoring interval in seconds (0 turns it off)."
  type        = number
  default     = 60

  validation {
    condition     = contains([0, 1, 5, 10, 15, 30, 60], var.db_monitoring_interval)
    error_message = "The interval must be one of 0, 1, 5, 10, 15, 30 or 60."
  }
}

variable "db_apply_immediately" {
  description = "Apply database changes at once instead of in the next maintenance window."
  type        = bool
  default     = false
}

################################################################################
# Existing IAM roles (null: the configuration creates the role)
################################################################################

variable "cluster_iam_role_arn" {
  description = "Existing IAM role for the EKS control plane (trusts eks.amazonaws.com, has AmazonEKSClusterPolicy and may use the EKS secrets KMS key); null creates one."
  type        = string
  default     = null

  validation {
    condition     = var.cluster_iam_role_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$", var.cluster_iam_role_arn))
    error_message = "Give an IAM role ARN, for example arn:aws:iam::123456789012:role/eks-cluster, or null to create the role."
  }
}

variable "node_iam_role_arn" {
  description = "Existing IAM role for the managed node group (trusts ec2.amazonaws.com, has AmazonEKSWorkerNodeMinimalPolicy, AmazonEC2ContainerRegistryPullOnly and AmazonEKS_CNI_Policy); null creates one."
  type        = string
  default     = null

  validation {
    condition     = var.node_iam_role_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$", var.node_iam_role_arn))
    error_message = "Give an IAM role ARN, for example arn:aws:iam::123456789012:role/eks-nodes, or null to create the role."
  }
}

variable "lb_controller_iam_role_arn" {
  description = "Existing IAM role for the AWS Load Balancer Controller (trusts pods.eks.amazonaws.com for sts:AssumeRole and sts:TagSession, has the controller's policy); null creates one."
  type        = string
  default     = null

  validation {
    condition     = var.lb_controller_iam_role_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$", var.lb_controller_iam_role_arn))
    error_message = "Give an IAM role ARN, for example arn:aws:iam::123456789012:role/aws-lbc, or null to create the role."
  }
}

variable "db_secret_store_service_accounts" {
  description = "The Kubernetes service accounts (namespace and name) whose tokens the two SecretStores of kube_config/ authenticate with (`auth.jwt.serviceAccountRef`): app reads the application role's secret, migration also the master user's."
  type = object({
    app       = object({ namespace = string, name = string })
    migration = object({ namespace = string, name = string })
  })
  default = {
    app       = { namespace = "flask-api", name = "db-app-secret-store" }
    migration = { namespace = "flask-api-migrate", name = "db-migration-secret-store" }
  }

  validation {
    condition     = var.db_secret_store_service_accounts.app != var.db_secret_store_service_accounts.migration
    error_message = "The two SecretStores need two service accounts: the application's must not read the master secret."
  }
}
