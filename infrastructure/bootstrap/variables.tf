variable "region" {
  description = "AWS region of the state bucket (use the region of the main configuration)."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "The region must look like an AWS region name, for example us-east-1."
  }
}

variable "name" {
  description = "Project name used in the bucket name and tags."
  type        = string
  default     = "flask-api"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}[a-z0-9]$", var.name))
    error_message = "The name must be 3-22 characters of lowercase letters, digits and hyphens."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days an overwritten state version is kept before it expires."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_version_retention_days >= 7
    error_message = "Keep old state versions for at least 7 days."
  }
}

variable "environments" {
  description = "Environments whose state this bucket holds (the main configuration's var.environment); each gets its own state key."
  type        = list(string)
  default     = ["production"]

  validation {
    condition     = length(var.environments) > 0 && alltrue([for environment in var.environments : can(regex("^[a-z][a-z0-9]{1,11}$", environment))])
    error_message = "Give at least one environment of 2-12 lowercase letters or digits, starting with a letter."
  }
}
