"""Invariants of the OpenTofu configuration, read from the parsed HCL.

`tofu init` / `tofu validate` need the registry and run in the GitHub workflow; these tests need
nothing but the files, so they hold the security-relevant decisions in place on every `make test`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infrastructure"
BOOTSTRAP = INFRA / "bootstrap"

OPEN_CIDRS = {"0.0.0.0/0", "::/0"}
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
REGISTRY_SOURCE = re.compile(r"^[a-z0-9-]+/[a-z0-9-]+/[a-z0-9]+(//.*)?$")


def _parse(text: str) -> dict[str, Any]:
    """Parse HCL; python-hcl2 8.x keeps string quotes unless told to strip them."""
    options_type = getattr(hcl2, "SerializationOptions", None)
    if options_type is None:  # python-hcl2 7.x strips quotes and has no options
        return hcl2.loads(text)
    options = options_type(strip_string_quotes=True, explicit_blocks=False)
    return hcl2.loads(text, serialization_options=options)


def _load_folder(folder: Path) -> dict[str, list[Any]]:
    """Merge the top-level blocks of every .tf file of one configuration folder."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(folder.glob("*.tf")):
        for kind, blocks in _parse(path.read_text()).items():
            if kind != "__comments__":
                merged.setdefault(kind, []).extend(blocks)
    return merged


@pytest.fixture(scope="module")
def root() -> dict[str, list[Any]]:
    return _load_folder(INFRA)


@pytest.fixture(scope="module")
def bootstrap() -> dict[str, list[Any]]:
    return _load_folder(BOOTSTRAP)


@pytest.fixture(scope="module")
def variables(root) -> dict[str, dict[str, Any]]:
    return _labelled(root, "variable")


def _labelled(config: dict[str, list[Any]], kind: str) -> dict[str, dict[str, Any]]:
    """`variable "x" {}`, `module "x" {}`, `output "x" {}` blocks by label."""
    return {label: body for block in config.get(kind, []) for label, body in block.items()}


def _resources(config: dict[str, list[Any]], kind: str = "resource") -> Iterator[tuple[str, str, dict]]:
    for block in config.get(kind, []):
        for rtype, named in block.items():
            for name, body in named.items():
                yield rtype, name, body


def _resource(config: dict[str, list[Any]], rtype: str, name: str) -> dict[str, Any]:
    for found_type, found_name, body in _resources(config):
        if (found_type, found_name) == (rtype, name):
            return body
    raise AssertionError(f"resource {rtype}.{name} not found")


def _terraform_settings(config: dict[str, list[Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in config["terraform"]:
        merged.update(block)
    return merged


def _required_providers(config: dict[str, list[Any]]) -> dict[str, Any]:
    providers: dict[str, Any] = {}
    for block in _terraform_settings(config)["required_providers"]:
        providers.update({k: v for k, v in block.items() if not k.startswith("__")})
    return providers


def _variable_reference(value: Any) -> str | None:
    """Name of the variable when the value is exactly `var.<name>`."""
    match = re.fullmatch(r"\$\{var\.([a-z0-9_]+)\}", str(value))
    return match.group(1) if match else None


def _cidrs(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(item) for item in value]
    return [str(value)] if value is not None else []


# ---------------------------------------------------------------------------------------------------
# Tool versions, providers, modules
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [INFRA, BOOTSTRAP], ids=["root", "bootstrap"])
def test_required_version_is_a_lower_bound_that_supports_s3_native_locking(folder: Path) -> None:
    constraint = _terraform_settings(_load_folder(folder))["required_version"]
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)(?:\.(\d+))?", constraint)
    assert match, f"{constraint!r} should be a single lower bound, so OpenTofu 1.x releases stay allowed"
    assert (int(match[1]), int(match[2])) >= (1, 10), "use_lockfile needs OpenTofu 1.10 or later"


@pytest.mark.parametrize("folder", [INFRA, BOOTSTRAP], ids=["root", "bootstrap"])
def test_providers_are_pinned_to_a_source_and_a_major_version(folder: Path) -> None:
    providers = _required_providers(_load_folder(folder))
    assert providers, "required_providers is empty"
    for name, spec in providers.items():
        assert re.fullmatch(r"[a-z0-9-]+/[a-z0-9-]+", spec["source"]), f"{name}: source {spec['source']!r}"
        assert re.fullmatch(r"(~>\s*\d+\.\d+|=?\s*\d+\.\d+\.\d+)", spec["version"]), (
            f"{name}: {spec['version']!r} allows a new major version"
        )


def test_bootstrap_uses_the_same_tool_and_provider_constraints(root, bootstrap) -> None:
    assert _terraform_settings(bootstrap)["required_version"] == _terraform_settings(root)["required_version"]
    assert _required_providers(bootstrap)["aws"] == _required_providers(root)["aws"]


def test_every_registry_module_is_pinned_to_an_exact_version(root) -> None:
    modules = _labelled(root, "module")
    assert {"vpc", "eks", "db", "lb_controller_pod_identity"} <= modules.keys()
    for name, body in modules.items():
        assert REGISTRY_SOURCE.match(body["source"]), (
            f"module {name}: {body['source']!r} is not a registry source"
        )
        assert EXACT_VERSION.match(str(body.get("version", ""))), (
            f"module {name}: version {body.get('version')!r} is not an exact x.y.z"
        )


# ---------------------------------------------------------------------------------------------------
# Remote state
# ---------------------------------------------------------------------------------------------------


def test_backend_is_s3_with_native_lock_file_and_encryption(root) -> None:
    backends = _terraform_settings(root)["backend"]
    assert len(backends) == 1
    assert "s3" in backends[0]
    s3 = backends[0]["s3"]
    assert s3["use_lockfile"] is True
    assert s3["encrypt"] is True
    assert "dynamodb_table" not in s3


def test_backend_has_no_hard_coded_bucket_key_or_region(root) -> None:
    s3 = _terraform_settings(root)["backend"][0]["s3"]
    assert not {"bucket", "key", "region", "kms_key_id", "profile"} & s3.keys()


def test_backend_config_example_names_every_partial_setting() -> None:
    example = _parse((INFRA / "backend.hcl.example").read_text())
    assert {"bucket", "key", "region", "kms_key_id"} <= example.keys()


# ---------------------------------------------------------------------------------------------------
# Encryption
# ---------------------------------------------------------------------------------------------------


def test_eks_secrets_are_envelope_encrypted_with_an_owned_kms_key(root) -> None:
    eks = _labelled(root, "module")["eks"]
    assert eks["encryption_config"]["resources"] == ["secrets"]
    assert eks["encryption_config"]["provider_key_arn"] == "${aws_kms_key.eks.arn}"


def test_rds_storage_and_master_secret_are_encrypted_with_a_kms_key(root) -> None:
    db = _labelled(root, "module")["db"]
    assert db["storage_encrypted"] is True
    assert db["kms_key_id"] == "${aws_kms_key.rds.arn}"
    assert db["master_user_secret_kms_key_id"] == "${aws_kms_key.rds.arn}"


def test_log_groups_are_encrypted_with_the_logs_key(root) -> None:
    modules = _labelled(root, "module")
    assert modules["vpc"]["flow_log_cloudwatch_log_group_kms_key_id"] == "${aws_kms_key.logs.arn}"
    assert modules["eks"]["cloudwatch_log_group_kms_key_id"] == "${aws_kms_key.logs.arn}"
    assert modules["db"]["cloudwatch_log_group_kms_key_id"] == "${aws_kms_key.logs.arn}"


@pytest.mark.parametrize("folder", [INFRA, BOOTSTRAP], ids=["root", "bootstrap"])
def test_every_kms_key_rotates(folder: Path) -> None:
    keys = [body for rtype, _, body in _resources(_load_folder(folder)) if rtype == "aws_kms_key"]
    assert keys
    assert all(key["enable_key_rotation"] is True for key in keys)


def test_state_bucket_is_kms_encrypted_and_versioned(bootstrap) -> None:
    sse = _resource(bootstrap, "aws_s3_bucket_server_side_encryption_configuration", "state")
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "aws:kms"
    assert default["kms_master_key_id"] == "${aws_kms_key.state.arn}"
    versioning = _resource(bootstrap, "aws_s3_bucket_versioning", "state")
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"


def test_state_bucket_blocks_public_access_and_denies_plain_http(bootstrap) -> None:
    block = _resource(bootstrap, "aws_s3_bucket_public_access_block", "state")
    flags = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    assert all(block[flag] is True for flag in flags)
    policy = _labelled(bootstrap, "data")["aws_iam_policy_document"]
    statements = [s for s in policy["state_bucket"]["statement"] if s["effect"] == "Deny"]
    conditions = {(c["variable"], tuple(c["values"])) for s in statements for c in s["condition"]}
    assert ("aws:SecureTransport", ("false",)) in conditions


def test_state_bucket_cannot_be_destroyed_by_an_apply(bootstrap) -> None:
    bucket = _resource(bootstrap, "aws_s3_bucket", "state")
    assert bucket["lifecycle"][0]["prevent_destroy"] is True


# ---------------------------------------------------------------------------------------------------
# Network exposure
# ---------------------------------------------------------------------------------------------------


def _ingress_sources(config: dict[str, list[Any]]) -> Iterator[tuple[str, list[str]]]:
    """Every ingress rule of the configuration with its CIDR sources."""
    for rtype, name, body in _resources(config):
        where = f"{rtype}.{name}"
        if rtype == "aws_security_group":
            for rule in body.get("ingress", []):
                yield where, _cidrs(rule.get("cidr_blocks")) + _cidrs(rule.get("ipv6_cidr_blocks"))
        elif rtype == "aws_security_group_rule" and body.get("type") == "ingress":
            yield where, _cidrs(body.get("cidr_blocks")) + _cidrs(body.get("ipv6_cidr_blocks"))
        elif rtype == "aws_vpc_security_group_ingress_rule":
            yield where, _cidrs(body.get("cidr_ipv4")) + _cidrs(body.get("cidr_ipv6"))
    modules = _labelled(config, "module")
    for name in ("node_security_group_additional_rules", "security_group_additional_rules"):
        for rule_name, rule in (modules["eks"].get(name) or {}).items():
            if rule.get("type") == "ingress":
                yield (
                    f"module.eks.{name}.{rule_name}",
                    _cidrs(rule.get("cidr_blocks")) + _cidrs(rule.get("ipv6_cidr_blocks")),
                )
    for rule_name, rule in (modules.get("vpc_endpoints", {}).get("security_group_rules") or {}).items():
        if rule.get("type", "ingress") == "ingress":
            yield f"module.vpc_endpoints.security_group_rules.{rule_name}", _cidrs(rule.get("cidr_blocks"))
    for rule in modules["vpc"].get("default_security_group_ingress") or []:
        yield "module.vpc.default_security_group_ingress", _cidrs(rule.get("cidr_blocks"))


def test_no_security_group_rule_allows_ingress_from_the_internet(root) -> None:
    rules = list(_ingress_sources(root))
    assert rules, "no ingress rule was found: the parser or the layout changed"
    for where, cidrs in rules:
        assert not OPEN_CIDRS & set(cidrs), f"{where} accepts {cidrs}"


def test_database_accepts_only_the_nodes_and_the_rotation_function_on_5432(root) -> None:
    db_rules = [
        body
        for rtype, _, body in _resources(root)
        if rtype in {"aws_vpc_security_group_ingress_rule", "aws_security_group_rule"}
        and body.get("security_group_id") == "${aws_security_group.db.id}"
    ]
    assert {rule["referenced_security_group_id"] for rule in db_rules} == {
        "${module.eks.node_security_group_id}",
        "${aws_security_group.db_rotation.id}",
    }
    assert len(db_rules) == 2
    for rule in db_rules:
        assert (rule["from_port"], rule["to_port"], rule["ip_protocol"]) == (5432, 5432, "tcp")
    assert "ingress" not in _resource(root, "aws_security_group", "db")
    assert _labelled(root, "module")["db"]["vpc_security_group_ids"] == ["${aws_security_group.db.id}"]


def test_database_is_private_and_multi_az_by_default(root, variables) -> None:
    db = _labelled(root, "module")["db"]
    assert db["publicly_accessible"] is False
    assert db["db_subnet_group_name"] == "${module.vpc.database_subnet_group_name}"
    assert variables[_variable_reference(db["multi_az"])]["default"] is True


def test_public_endpoint_cidrs_have_no_default_and_are_validated(root, variables) -> None:
    eks = _labelled(root, "module")["eks"]
    assert eks["endpoint_private_access"] is True
    name = _variable_reference(eks["endpoint_public_access_cidrs"])
    assert name == "cluster_endpoint_public_access_cidrs"
    assert "default" not in variables[name], "the user must choose who reaches the API"
    conditions = " ".join(v["condition"] for v in variables[name]["validation"])
    assert "cidrhost" in conditions
    assert 'split("/"' in conditions


def test_cluster_admins_come_from_a_variable_and_the_creator_gets_no_implicit_admin(root, variables) -> None:
    eks = _labelled(root, "module")["eks"]
    assert eks["enable_cluster_creator_admin_permissions"] is False
    assert eks["authentication_mode"] == "API"
    assert "var.cluster_admin_principal_arns" in eks["access_entries"]
    assert "AmazonEKSClusterAdminPolicy" in eks["access_entries"]
    assert "default" not in variables["cluster_admin_principal_arns"]


def test_vpc_spans_three_zones_with_load_balancer_subnet_tags(root) -> None:
    vpc = _labelled(root, "module")["vpc"]
    assert vpc["azs"] == "${local.azs}"
    assert vpc["public_subnet_tags"] == {"kubernetes.io/role/elb": "1"}
    assert vpc["private_subnet_tags"] == {"kubernetes.io/role/internal-elb": "1"}
    for tier in ("private_subnets", "public_subnets", "database_subnets", "intra_subnets"):
        assert vpc[tier] == f"${{local.{tier}}}"
    postcondition = _labelled(root, "data")["aws_availability_zones"]["available"]["lifecycle"][0]
    assert "length(self.zone_ids) >= 3" in postcondition["postcondition"][0]["condition"]


def test_zones_are_chosen_by_zone_id_never_by_name(root, variables) -> None:
    zones = _labelled(root, "data")["aws_availability_zones"]["available"]
    # A name such as us-east-1a is another physical zone in every account: nothing may build or filter names.
    assert "zone-name" not in str(zones)
    assert zones["exclude_zone_ids"] == "${var.eks_unsupported_zone_ids}"
    locals_text = str(root["locals"])
    assert "var.region}a" not in locals_text.replace("${", "")
    assert "sort(data.aws_availability_zones.available.zone_ids)" in locals_text
    assert "var.availability_zone_ids" in locals_text
    assert "availability_zones" not in variables


def test_zone_ids_that_eks_refuses_are_excluded_by_default(variables) -> None:
    # use1-az3 (us-east-1), usw1-az2 (us-west-1), cac1-az3 (ca-central-1): no EKS control-plane subnets.
    assert {"use1-az3", "usw1-az2", "cac1-az3"} <= set(variables["eks_unsupported_zone_ids"]["default"])
    conditions = " ".join(v["condition"] for v in variables["availability_zone_ids"]["validation"])
    assert "var.eks_unsupported_zone_ids" in conditions
    assert "-az[0-9]+" in conditions


def test_one_nat_gateway_per_zone_by_default_and_a_shared_one_by_variable(root, variables) -> None:
    # A zone's loss must not stop the egress of the other two (image pulls, AWS APIs without an endpoint).
    vpc = _labelled(root, "module")["vpc"]
    assert vpc["enable_nat_gateway"] is True
    assert vpc["single_nat_gateway"] == "${!var.one_nat_gateway_per_az}"
    assert vpc["one_nat_gateway_per_az"] == "${var.one_nat_gateway_per_az}"
    assert variables["one_nat_gateway_per_az"]["default"] is True


def test_vpc_endpoints_keep_image_pulls_credentials_and_secrets_inside_the_vpc(root, variables) -> None:
    modules = _labelled(root, "module")
    endpoints = modules["vpc_endpoints"]
    assert endpoints["source"] == "terraform-aws-modules/vpc/aws//modules/vpc-endpoints"
    assert endpoints["version"] == modules["vpc"]["version"]
    interface = {k: v for block in root["locals"] for k, v in block.items()}["interface_endpoint_services"]
    assert {"ecr.api", "ecr.dkr", "sts", "secretsmanager", "eks-auth"} <= set(interface)
    text = endpoints["endpoints"]
    # One interface endpoint per service, answering on the service's own name (private DNS), in the private
    # subnets; S3 (ECR's layers) as a gateway on the private route tables.
    assert "for service in local.interface_endpoint_services" in text
    assert re.search(r"service_type\s*=\s*\"Interface\"", text)
    assert re.search(r"private_dns_enabled\s*=\s*true", text)
    assert re.search(r'service\s*=\s*"s3"', text)
    assert re.search(r'service_type\s*=\s*"Gateway"', text)
    assert "route_table_ids = module.vpc.private_route_table_ids" in re.sub(r"\s+", " ", text)
    assert endpoints["subnet_ids"] == "${module.vpc.private_subnets}"
    assert variables["vpc_interface_endpoints_enabled"]["default"] is True


def test_the_rotation_function_reaches_secrets_manager_through_its_endpoint_not_the_internet(root) -> None:
    endpoint = _resource(
        root, "aws_vpc_security_group_egress_rule", "db_rotation_to_secrets_manager_endpoint"
    )
    assert endpoint["referenced_security_group_id"] == "${module.vpc_endpoints.security_group_id}"
    assert (endpoint["ip_protocol"], endpoint["from_port"], endpoint["to_port"]) == ("tcp", 443, 443)
    assert endpoint["count"] == "${var.vpc_interface_endpoints_enabled ? 1 : 0}"
    internet = _resource(root, "aws_vpc_security_group_egress_rule", "db_rotation_to_secrets_manager")
    assert internet["cidr_ipv4"] == "0.0.0.0/0"
    assert internet["count"] == "${var.vpc_interface_endpoints_enabled ? 0 : 1}"


def test_interface_endpoints_accept_https_from_the_vpc_only(root) -> None:
    endpoints = _labelled(root, "module")["vpc_endpoints"]
    assert endpoints["create_security_group"] == "${var.vpc_interface_endpoints_enabled}"
    (rule,) = endpoints["security_group_rules"].values()
    assert (rule["type"], rule["protocol"], rule["from_port"], rule["to_port"]) == (
        "ingress",
        "tcp",
        443,
        443,
    )
    assert rule["cidr_blocks"] == ["${module.vpc.vpc_cidr_block}"]


def test_vpc_flow_logs_are_on(root) -> None:
    vpc = _labelled(root, "module")["vpc"]
    assert vpc["enable_flow_log"] is True
    assert vpc["create_flow_log_cloudwatch_log_group"] is True
    assert vpc["flow_log_traffic_type"] == "ALL"


def test_eks_control_plane_logs_include_audit_and_authenticator(root) -> None:
    log_types = set(_labelled(root, "module")["eks"]["enabled_log_types"])
    assert {"api", "audit", "authenticator"} <= log_types


def test_the_pod_identity_agent_runs_before_the_nodes_join(root) -> None:
    # The node groups themselves: tests/infrastructure/test_node_groups.py.
    eks = _labelled(root, "module")["eks"]
    assert eks["addons"]["eks-pod-identity-agent"]["before_compute"] is True


def test_vpc_cni_enforces_network_policies(root) -> None:
    values = _labelled(root, "module")["eks"]["addons"]["vpc-cni"]["configuration_values"]
    assert re.search(r'enableNetworkPolicy\s*=\s*\\?"true', values), values


def test_lb_controller_role_is_bound_to_its_service_account_through_pod_identity(root) -> None:
    identity = _labelled(root, "module")["lb_controller_pod_identity"]
    assert identity["attach_aws_lb_controller_policy"] is True
    association = identity["associations"]["this"]
    assert association["cluster_name"] == "${module.eks.cluster_name}"
    assert (association["namespace"], association["service_account"]) == (
        "kube-system",
        "aws-load-balancer-controller",
    )


# ---------------------------------------------------------------------------------------------------
# Persistent volumes
# ---------------------------------------------------------------------------------------------------


def test_the_ebs_csi_driver_add_on_runs_with_its_own_role_through_pod_identity(root) -> None:
    # EKS >= 1.30 has no default StorageClass and no in-tree EBS provisioner: without the driver every
    # PersistentVolumeClaim stays Pending.
    addon = _labelled(root, "module")["eks"]["addons"]["aws-ebs-csi-driver"]
    assert addon["pod_identity_association"] == [
        {
            "role_arn": "${module.ebs_csi_pod_identity.iam_role_arn}",
            "service_account": "ebs-csi-controller-sa",
        }
    ]
    identity = _labelled(root, "module")["ebs_csi_pod_identity"]
    assert identity["source"] == "terraform-aws-modules/eks-pod-identity/aws"
    assert identity["attach_aws_ebs_csi_policy"] is True
    assert "associations" not in identity, "the add-on creates the association; a second one would conflict"


def test_ebs_volumes_are_encrypted_with_an_owned_rotating_key_the_driver_may_use(root) -> None:
    identity = _labelled(root, "module")["ebs_csi_pod_identity"]
    assert identity["aws_ebs_csi_kms_arns"] == ["${aws_kms_key.ebs.arn}"]
    assert _resource(root, "aws_kms_key", "ebs")["enable_key_rotation"] is True
    # The StorageClass in kube_config/ reads the key from infrastructure.env.
    assert "EBS_KMS_KEY_ARN=${aws_kms_key.ebs.arn}" in _labelled(root, "output")["eks_overlay_env"]["value"]


# ---------------------------------------------------------------------------------------------------
# Database lifecycle switches
# ---------------------------------------------------------------------------------------------------


def test_deletion_protection_is_wired_to_a_variable_defaulting_to_true(root, variables) -> None:
    name = _variable_reference(_labelled(root, "module")["db"]["deletion_protection"])
    assert name, "deletion_protection must come from a variable"
    assert variables[name]["default"] is True


def test_final_snapshot_is_wired_to_a_variable_and_taken_by_default(root, variables) -> None:
    name = _variable_reference(_labelled(root, "module")["db"]["skip_final_snapshot"])
    assert name, "skip_final_snapshot must come from a variable"
    assert variables[name]["default"] is False


def test_backup_retention_is_wired_to_a_variable_and_on_by_default(root, variables) -> None:
    name = _variable_reference(_labelled(root, "module")["db"]["backup_retention_period"])
    assert name, "backup_retention_period must come from a variable"
    assert variables[name]["default"] >= 7


def test_database_parameter_group_forces_tls(root) -> None:
    parameters = {p["name"]: p["value"] for p in _labelled(root, "module")["db"]["parameters"]}
    assert parameters["rds.force_ssl"] == "1"


def test_master_password_is_managed_in_secrets_manager(root) -> None:
    db = _labelled(root, "module")["db"]
    assert db["manage_master_user_password"] is True
    assert not {"password", "master_password_wo", "password_wo"} & db.keys()


# ---------------------------------------------------------------------------------------------------
# Interface
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [INFRA, BOOTSTRAP], ids=["root", "bootstrap"])
def test_every_variable_has_a_description_and_a_type(folder: Path) -> None:
    found = _labelled(_load_folder(folder), "variable")
    assert found
    for name, body in found.items():
        assert str(body.get("description", "")).strip(), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"


def test_outputs_read_by_the_eks_overlay_exist(root) -> None:
    expected = {
        "cluster_name",
        "region",
        "db_endpoint",
        "db_port",
        "db_name",
        "db_master_secret_arn",
        "vpc_cidr",
        "vpc_id",
        "lb_controller_role_arn",
        "db_secret_store_role_arns",
        "kubeconfig_command",
        "eks_overlay_env",
    }
    outputs = _labelled(root, "output")
    assert expected <= outputs.keys()
    assert all(str(outputs[name].get("description", "")).strip() for name in outputs)


def test_tfvars_example_sets_every_variable_without_a_default(variables) -> None:
    example = _parse((INFRA / "terraform.tfvars.example").read_text())
    required = {name for name, body in variables.items() if "default" not in body}
    assert required == {
        "cluster_endpoint_public_access_cidrs",
        "cluster_admin_principal_arns",
        "alb_certificate_arn",
    }
    assert required <= example.keys()
    assert not OPEN_CIDRS & set(example["cluster_endpoint_public_access_cidrs"])


def test_eks_overlay_env_carries_the_subnet_cidrs_from_the_vpc_module(root) -> None:
    value = _labelled(root, "output")["eks_overlay_env"]["value"]
    # From the module's outputs, whatever vpc_cidr is: never a literal range.
    assert "module.vpc.public_subnets_cidr_blocks" in value
    assert "module.vpc.database_subnets_cidr_blocks" in value
    assert "PUBLIC_SUBNET_CIDR_" in value
    assert "DATABASE_SUBNET_CIDR_" in value
    assert "CERTIFICATE_ARN=${var.alb_certificate_arn}" in value
    assert not re.search(r"\b10\.\d+\.\d+\.\d+", value)


def test_each_environment_gets_its_own_state_key(bootstrap) -> None:
    value = _labelled(bootstrap, "output")["backend_config"]["value"]
    assert "production" not in str(value)
    assert "for environment in var.environments" in str(value)
    assert "${var.name}/${environment}/terraform.tfstate" in str(value)
    variables = _labelled(bootstrap, "variable")
    assert variables["environments"]["default"] == ["production"]


def test_the_app_role_secret_rotates_and_keeps_its_first_password_out_of_the_state(root, variables) -> None:
    version = _resource(root, "aws_secretsmanager_secret_version", "db_app")
    assert "secret_string" not in version
    assert (
        "ephemeral.aws_secretsmanager_random_password.db_app.random_password" in version["secret_string_wo"]
    )
    assert "var.db_app_username" in version["secret_string_wo"]
    rotation = _resource(root, "aws_secretsmanager_secret_rotation", "db_app")
    assert rotation["rotation_rules"][0]["automatically_after_days"] == "${var.db_app_password_rotation_days}"
    assert "RotationLambdaARN" in rotation["rotation_lambda_arn"]
    assert variables["db_app_username"]["default"] != variables["db_username"]["default"]


def test_the_app_role_secret_is_seeded_once_and_its_comments_do_not_say_otherwise(root) -> None:
    version = _resource(root, "aws_secretsmanager_secret_version", "db_app")
    assert version["lifecycle"][0]["ignore_changes"] == ["secret_string_wo_version"]
    text = (INFRA / "db-credentials.tf").read_text()
    block = text[text.index('resource "aws_secretsmanager_secret_version" "db_app"') :]
    block = block[: block.index("\n}\n")]
    comments = " ".join(line.strip() for line in block.splitlines() if line.strip().startswith("#")).lower()
    # ignore_changes makes a raised secret_string_wo_version a no-op: no comment may suggest bumping it.
    assert not re.search(r"\bbump", comments), comments
    assert "ignore_changes" in comments, comments
    assert "rotate-secret" in comments, comments


def _policy_documents(config: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: body for kind, name, body in _resources(config, "data") if kind == "aws_iam_policy_document"
    }


def test_no_identity_lists_or_batch_reads_secrets_and_every_secret_read_names_its_arns(root) -> None:
    # The module's External Secrets policy grants ListSecrets and BatchGetSecretValue on "*".
    modules = _labelled(root, "module")
    assert not any(body.get("attach_external_secrets_policy") for body in modules.values())
    statements = [s for body in _policy_documents(root).values() for s in body.get("statement", [])]
    actions = {a for s in statements for a in s["actions"]}
    assert (
        not {"secretsmanager:ListSecrets", "secretsmanager:BatchGetSecretValue", "secretsmanager:*"} & actions
    )
    reads = [s for s in statements if "secretsmanager:GetSecretValue" in s["actions"]]
    assert reads
    for statement in reads:
        assert "*" not in str(statement["resources"]), statement["resources"]


def test_each_secret_store_has_its_own_role_and_only_the_migrations_reads_the_master_secret(root) -> None:
    readers = {k: v for block in root["locals"] for k, v in block.items()}["secret_readers"]
    assert set(readers) == {"app", "migration"}
    assert readers["app"]["secret_arns"] == ["${aws_secretsmanager_secret.db_app.arn}"]
    assert "${module.db.db_instance_master_user_secret_arn}" in readers["migration"]["secret_arns"]
    assert readers["app"]["service_account"] == "${var.db_secret_store_service_accounts.app}"
    assert readers["migration"]["service_account"] == "${var.db_secret_store_service_accounts.migration}"
    accounts = _labelled(root, "variable")["db_secret_store_service_accounts"]
    assert accounts["default"]["app"] != accounts["default"]["migration"]
    role = _resource(root, "aws_iam_role", "secret_reader")
    assert role["for_each"] == "${local.secret_readers}"
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.secret_reader_trust[each.key].json}"


def test_a_secret_store_role_trusts_one_service_account_token_for_sts(root) -> None:
    (statement,) = _policy_documents(root)["secret_reader_trust"]["statement"]
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    assert statement["principals"] == [
        {"type": "Federated", "identifiers": ["${module.eks.oidc_provider_arn}"]}
    ]
    conditions = {c["variable"]: (c["test"], c["values"]) for c in statement["condition"]}
    assert conditions == {
        "${local.oidc_issuer}:aud": ("StringEquals", ["sts.amazonaws.com"]),
        "${local.oidc_issuer}:sub": (
            "StringEquals",
            [
                "system:serviceaccount:${each.value.service_account.namespace}:"
                "${each.value.service_account.name}"
            ],
        ),
    }
    assert _labelled(root, "module")["eks"]["enable_irsa"] is True


def test_secret_store_roles_decrypt_with_the_rds_key_through_secrets_manager_only(root) -> None:
    statements = _policy_documents(root)["secret_reader"]["statement"]
    (decrypt,) = [s for s in statements if "kms:Decrypt" in s["actions"]]
    assert decrypt["resources"] == ["${aws_kms_key.rds.arn}"]
    (condition,) = decrypt["condition"]
    assert (condition["variable"], condition["values"]) == (
        "kms:ViaService",
        ["secretsmanager.${var.region}.amazonaws.com"],
    )


def test_every_checkov_skip_names_a_check_and_gives_a_reason() -> None:
    skips = [
        (path.relative_to(INFRA), line)
        for path in sorted(INFRA.rglob("*.tf"))
        for line in path.read_text().splitlines()
        if "checkov:skip" in line
    ]
    assert skips
    for where, line in skips:
        assert re.fullmatch(r"\s*#checkov:skip=CKV2?_[A-Z0-9]+_\d+:[^=]{10,}", line), (
            f"{where}: {line.strip()}"
        )
