"""Nodes the prod overlay needs at its HorizontalPodAutoscaler maximums: ``python -m tools.capacity``.

The overlay is rendered with ``kubectl kustomize`` as Argo CD renders it; each Deployment counts at its HPA's
``maxReplicas`` (its ``replicas`` where no HPA targets it), with a pod's request as the scheduler takes it
(the larger of the containers' sum and the largest init container). A Deployment whose pods must spread
over zones (``topology.kubernetes.io/zone``, ``DoNotSchedule``) fills the zones evenly, so each zone needs
its share of nodes. A node offers its allocatable CPU and memory (the EKS AL2023 kube-reserved formulas
and the 100Mi hard eviction threshold) less what runs on every node: the DaemonSets below. The in-cluster
platform (Argo CD, Prometheus, OpenSearch, ...) is held by the node groups' minimum, one node per zone,
which the result adds. There is one node group per zone (infrastructure/node-groups.tf), so each holds its
zone's share.

``tests/infrastructure/test_capacity.py`` checks that the zones' node groups hold the result and that
docs/aws.md states the figures this prints.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PROD_OVERLAY = REPO / "kube_config" / "overlays" / "prod"
ZONES = 3

# The node group's instance type: vCPUs, memory (MiB, as sold) and the VPC CNI's pod limit (ENIs x
# (addresses per ENI - 1) + 2).
INSTANCE_TYPES = {"m7i.large": (2, 8192, 29)}

# Requests of what runs on every node besides the platform's own DaemonSets read below: the EKS add-ons'
# defaults (kube-proxy 100m; aws-node 25m; the Pod Identity agent and the EBS CSI node plugin request less
# than 25m together).
ADD_ON_DAEMONSETS_CPU_M = 150
ADD_ON_DAEMONSETS_MEMORY_MI = 128
PLATFORM_DAEMONSET_VALUES = [REPO / "kube_config" / "platform" / "fluent-bit" / "values.yaml"]


@dataclass(frozen=True)
class Workload:
    """One Deployment of the rendered overlay at its maximum."""

    name: str
    cpu_m: int
    memory_mi: int
    replicas: int
    zone_spread: bool


def cpu_millicores(quantity: str | int | float) -> int:
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def memory_mebibytes(quantity: str | int) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(quantity))
    if not match:
        raise ValueError(f"unsupported memory quantity {quantity!r}")
    factor = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, None: 1 / (1024 * 1024)}[match.group(2)]
    return math.ceil(int(match.group(1)) * factor)


def pod_requests(pod_spec: dict) -> tuple[int, int]:
    """(CPU millicores, memory MiB) the scheduler reserves for one pod."""

    def requests(container: dict) -> tuple[int, int]:
        wanted = (container.get("resources") or {}).get("requests") or {}
        return cpu_millicores(wanted.get("cpu", 0)), memory_mebibytes(wanted.get("memory", 0))

    containers = [requests(c) for c in pod_spec["containers"]]
    inits = [requests(c) for c in pod_spec.get("initContainers", [])]
    return (
        max([sum(c for c, _ in containers), *(c for c, _ in inits)]),
        max([sum(m for _, m in containers), *(m for _, m in inits)]),
    )


def render(overlay: Path = PROD_OVERLAY) -> list[dict]:
    out = subprocess.run(  # noqa: S603 (a fixed command line)
        # kubectl from PATH, as the docs run it.
        ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(overlay)],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def workloads(objects: list[dict]) -> list[Workload]:
    maximums = {
        (hpa["metadata"].get("namespace"), hpa["spec"]["scaleTargetRef"]["name"]): hpa["spec"]["maxReplicas"]
        for hpa in objects
        if hpa["kind"] == "HorizontalPodAutoscaler" and hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    }
    found = []
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        key = (deployment["metadata"].get("namespace"), deployment["metadata"]["name"])
        spec = deployment["spec"]["template"]["spec"]
        cpu, memory = pod_requests(spec)
        spread = any(
            c["topologyKey"] == "topology.kubernetes.io/zone" and c["whenUnsatisfiable"] == "DoNotSchedule"
            for c in spec.get("topologySpreadConstraints", [])
        )
        replicas = maximums.get(key, deployment["spec"].get("replicas", 1))
        found.append(Workload(key[1], cpu, memory, replicas, spread))
    return found


def node_allocatable(instance_type: str) -> tuple[int, int]:
    """(CPU millicores, memory MiB) a node offers to pods before any DaemonSet."""
    vcpus, memory, max_pods = INSTANCE_TYPES[instance_type]
    # kube-reserved CPU: 6% of the first core, 1% of the second, 0.5% of the next two, 0.25% of the rest.
    shares = [60, 10, 5, 5] + [2.5] * max(0, vcpus - 4)
    reserved_cpu = math.ceil(sum(shares[:vcpus]))
    reserved_memory = 255 + 11 * max_pods + 100  # kube-reserved, then the hard eviction threshold
    return vcpus * 1000 - reserved_cpu, memory - reserved_memory


def daemonset_requests() -> tuple[int, int]:
    cpu, memory = ADD_ON_DAEMONSETS_CPU_M, ADD_ON_DAEMONSETS_MEMORY_MI
    for path in PLATFORM_DAEMONSET_VALUES:
        wanted = yaml.safe_load(path.read_text())["resources"]["requests"]
        cpu += cpu_millicores(wanted["cpu"])
        memory += memory_mebibytes(wanted["memory"])
    return cpu, memory


@dataclass(frozen=True)
class Capacity:
    instance_type: str
    free_cpu_m: int
    free_memory_mi: int
    workloads: list[Workload]
    workload_nodes: int
    platform_nodes: int

    @property
    def nodes(self) -> int:
        return self.workload_nodes + self.platform_nodes


def capacity(instance_type: str, platform_nodes: int, objects: list[dict] | None = None) -> Capacity:
    cpu, memory = node_allocatable(instance_type)
    ds_cpu, ds_memory = daemonset_requests()
    free_cpu, free_memory = cpu - ds_cpu, memory - ds_memory
    found = workloads(render() if objects is None else objects)
    nodes = 0
    for workload in found:
        per_node = min(free_cpu // workload.cpu_m, free_memory // workload.memory_mi)
        if per_node < 1:
            raise ValueError(f"a {workload.name} pod does not fit on an empty {instance_type} node")
        if workload.zone_spread:
            nodes += ZONES * math.ceil(math.ceil(workload.replicas / ZONES) / per_node)
        else:
            nodes += math.ceil(workload.replicas / per_node)
    return Capacity(instance_type, free_cpu, free_memory, found, nodes, platform_nodes)


def summary(result: Capacity) -> str:
    """The sentence docs/aws.md carries."""
    parts = [
        f"{w.replicas} x {w.name} ({w.cpu_m}m CPU, {w.memory_mi}Mi requested each"
        f"{', spread over the zones' if w.zone_spread else ''})"
        for w in result.workloads
    ]
    return (
        f"At the HPA maximums the prod overlay asks for {', '.join(parts)}; each {result.instance_type} node "
        f"offers {result.free_cpu_m}m CPU and {result.free_memory_mi}Mi after kube-reserved, eviction "
        f"threshold and DaemonSets, so they take {result.workload_nodes} nodes, plus {result.platform_nodes} "
        f"for the platform: `node_max_size` >= {result.nodes}, {math.ceil(result.nodes / ZONES)} in each "
        "zone's node group."
    )


def main() -> int:
    print(summary(capacity("m7i.large", platform_nodes=ZONES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
