output "bucket_name" {
  description = "Name of the state bucket."
  value       = aws_s3_bucket.state.id
}

output "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the state."
  value       = aws_kms_key.state.arn
}

output "backend_config" {
  description = "Contents of ../backend.hcl for each environment, one state key each (tofu init -backend-config=backend.hcl)."
  value = {
    for environment in var.environments : environment => <<-EOT
      bucket     = "${aws_s3_bucket.state.id}"
      key        = "${var.name}/${environment}/terraform.tfstate"
      region     = "${var.region}"
      kms_key_id = "${aws_kms_key.state.arn}"
    EOT
  }
}
