"""Every argument given to a registry module is a variable that module declares.

`tofu validate` checks this in the workflow, where the registry can be reached; here the modules' own
`variables.tf`, vendored with their source and checksum under tests/infrastructure/upstream/ (README.md
there), stand in for the downloaded modules, so a misspelt or removed argument fails `make test` too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.infrastructure.node_groups import node_groups, node_groups_as_the_module_types_them, tool
from tests.infrastructure.test_invariants import INFRA, _labelled, _load_folder, _parse

UPSTREAM = Path(__file__).resolve().parent / "upstream"
# Registry source of each module called in infrastructure/ -> its vendored variables.tf.
INTERFACES = {
    "terraform-aws-modules/eks/aws": UPSTREAM / "terraform-aws-eks" / "variables.tf",
    "terraform-aws-modules/vpc/aws": UPSTREAM / "terraform-aws-vpc" / "variables.tf",
    "terraform-aws-modules/vpc/aws//modules/vpc-endpoints": (
        UPSTREAM / "terraform-aws-vpc" / "modules" / "vpc-endpoints" / "variables.tf"
    ),
    "terraform-aws-modules/eks-pod-identity/aws": UPSTREAM
    / "terraform-aws-eks-pod-identity"
    / "variables.tf",
}
# The EKS module hands each entry of eks_managed_node_groups to this submodule.
NODE_GROUP_INTERFACE = UPSTREAM / "terraform-aws-eks" / "modules" / "eks-managed-node-group" / "variables.tf"
# Arguments of every module block that are the language's, not the module's.
META_ARGUMENTS = {"source", "version", "count", "for_each", "providers", "depends_on"}


def declared(path: Path) -> set[str]:
    return {name for block in _parse(path.read_text()).get("variable", []) for name in block}


def test_the_vendored_interfaces_match_their_checksums():
    listed = {}
    for line in (UPSTREAM / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[(UPSTREAM / name).resolve()] = digest
    assert set(listed) == {path.resolve() for path in [*INTERFACES.values(), NODE_GROUP_INTERFACE]}
    for path, digest in listed.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, (
            f"{path} differs from its upstream copy"
        )


def test_every_module_called_has_a_vendored_interface():
    sources = {body["source"] for body in _labelled(_load_folder(INFRA), "module").values()}
    # The RDS module (terraform-aws-modules/rds/aws) is checked by `tofu validate` in the workflow only.
    assert sources - {"terraform-aws-modules/rds/aws"} <= INTERFACES.keys()


@pytest.mark.parametrize(
    "module",
    sorted(
        name
        for name, body in _labelled(_load_folder(INFRA), "module").items()
        if body["source"] in INTERFACES
    ),
)
def test_every_argument_is_a_variable_the_module_declares(module: str):
    body: dict[str, Any] = _labelled(_load_folder(INFRA), "module")[module]
    # Keys the parser adds (__start_line__, __comments__, ...) are not arguments.
    given = {key for key in body if not key.startswith("__")} - META_ARGUMENTS
    unknown = given - declared(INTERFACES[body["source"]])
    assert not unknown, f"module {module} ({body['source']}) declares no variable {sorted(unknown)}"


def dropped(given: Any, typed: Any, path: str = "") -> list[str]:
    """Paths of the settings given that the typed value does not keep as they were given."""
    if not isinstance(given, dict):
        return [] if given == typed else [path]
    return [
        lost
        for key, value in given.items()
        if value is not None
        for lost in ([f"{path}{key}"] if key not in typed else dropped(value, typed[key], f"{path}{key}."))
    ]


@pytest.mark.skipif(tool() is None, reason="tofu or terraform evaluates the node groups")
def test_every_node_group_setting_reaches_the_eks_module_and_its_node_group_module():
    # The module's type of eks_managed_node_groups drops an attribute it does not know, without an error.
    given = node_groups()
    assert dropped(given, node_groups_as_the_module_types_them()) == []
    settings = {key for group in given.values() for key in group}
    assert settings - declared(NODE_GROUP_INTERFACE) == set()
