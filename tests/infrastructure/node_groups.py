"""The managed node groups as OpenTofu computes them, without AWS or the module registry.

infrastructure/eks.tf gives the EKS module ``local.eks_managed_node_groups`` (node-groups.tf). Its for
expression is evaluated by ``tofu console`` (or ``terraform console``) in a scratch configuration: the real
variables.tf and node-groups.tf, and in place of what needs AWS, three zone IDs and a local stand-in for the
VPC module whose private subnets are named after their zones, in the order the VPC module places them
(private_subnets[i] in azs[i]), and the EKS module's vendored variables.tf. The result is what the module
receives, with every variable's default unless given.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.infrastructure.test_invariants import INFRA

ZONE_IDS = ["use1-az1", "use1-az2", "use1-az4"]
# Variables without a default, given values their validations accept; the node groups do not read them.
REQUIRED = {
    "cluster_endpoint_public_access_cidrs": ["203.0.113.10/32"],
    "cluster_admin_principal_arns": ["arn:aws:iam::123456789012:role/Admin"],
    "alb_certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/0123abcd",
}
STAND_IN = """
locals {
  azs = %s
}

module "vpc" {
  source = "./vpc"
}

# The EKS module's own variables.tf (vendored): its type of eks_managed_node_groups, applied as the module
# applies it.
module "eks_interface" {
  source = "./eks-interface"

  eks_managed_node_groups = local.eks_managed_node_groups
}
"""
EKS_INTERFACE = INFRA.parent / "tests" / "infrastructure" / "upstream" / "terraform-aws-eks" / "variables.tf"


def tool() -> str | None:
    return shutil.which("tofu") or shutil.which("terraform")


def subnet_of(zone: str) -> str:
    """The stand-in VPC's private subnet in a zone."""
    return f"subnet-private-{zone}"


def evaluate(expression: str, variables: dict[str, Any] | None = None, zones: list[str] = ZONE_IDS) -> Any:
    """The value of an expression over variables.tf and node-groups.tf, as JSON."""
    binary = tool()
    assert binary, "tofu or terraform evaluates the node groups"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name in ("variables.tf", "node-groups.tf"):
            shutil.copy(INFRA / name, folder / name)
        (folder / "stand-in.tf").write_text(STAND_IN % json.dumps(zones))
        (folder / "vpc").mkdir()
        subnets = json.dumps([subnet_of(zone) for zone in zones])
        (folder / "vpc" / "outputs.tf").write_text(f'output "private_subnets" {{\n  value = {subnets}\n}}\n')
        (folder / "eks-interface").mkdir()
        shutil.copy(EKS_INTERFACE, folder / "eks-interface" / "variables.tf")
        (folder / "eks-interface" / "outputs.tf").write_text(
            'output "eks_managed_node_groups" {\n  value = var.eks_managed_node_groups\n}\n'
        )
        (folder / "test.tfvars.json").write_text(json.dumps(REQUIRED | (variables or {})))
        (folder / "cli.tfrc").write_text("")
        env = os.environ | {"TF_CLI_CONFIG_FILE": str(folder / "cli.tfrc"), "CHECKPOINT_DISABLE": "1"}

        def run(*arguments: str, stdin: str = "") -> str:
            done = subprocess.run(
                [binary, *arguments],
                cwd=folder,
                env=env,
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, f"{binary} {arguments[0]} failed:\n{done.stderr}"
            return done.stdout

        run("init", "-backend=false", "-input=false", "-no-color")
        printed = run(
            "console", "-var-file=test.tfvars.json", "-no-color", stdin=f"jsonencode({expression})\n"
        )
    # console prints the JSON text as an HCL string literal, whose escapes are JSON's for these values.
    return json.loads(json.loads(printed))


def node_groups(variables: dict[str, Any] | None = None, zones: list[str] = ZONE_IDS) -> dict[str, dict]:
    """The eks_managed_node_groups that eks.tf gives the EKS module, keyed by group."""
    return evaluate("local.eks_managed_node_groups", variables, zones)


def node_groups_as_the_module_types_them() -> dict[str, dict]:
    """The same, converted to the module's type: an attribute the type lacks is dropped, the others kept."""
    return evaluate("module.eks_interface.eks_managed_node_groups")
