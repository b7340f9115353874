################################################################################
# Remote state
################################################################################

# Partial configuration: the bucket, key, region and KMS key come from a file
# passed at init time, so no account-specific value is committed:
#
#   tofu init -backend-config=backend.hcl
#
# backend.hcl.example shows the keys; infrastructure/bootstrap creates the
# bucket and prints a ready-made backend.hcl.
terraform {
  backend "s3" {
    # S3 conditional writes hold the lock: no DynamoDB table to run.
    use_lockfile = true
    encrypt      = true
  }
}
