"""Read the Kubernetes manifests of kube_config/ the way kubectl and kustomize see them (pyyaml only)."""

from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
KUBE_CONFIG = REPO / "kube_config"
OVERLAYS = KUBE_CONFIG / "overlays"
MONITORING = KUBE_CONFIG / "monitoring"
SCRIPTS = KUBE_CONFIG / "scripts"
NAMESPACE = "flask-api"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def load_documents(path: Path) -> list[dict]:
    """Every non-empty YAML document of one file."""
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def top_level_files() -> list[Path]:
    """The files `kubectl apply -f kube_config/` reads (it does not recurse)."""
    return sorted(p for p in KUBE_CONFIG.iterdir() if p.suffix in {".yaml", ".yml", ".json"})


def base_objects() -> list[dict]:
    """Every object of kube_config/*.yaml."""
    return [doc for path in top_level_files() for doc in load_documents(path)]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    """Objects of one kind (and name)."""
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str) -> dict:
    """The single object of that kind and name."""
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(objects: list[dict]) -> list[dict]:
    """Objects that carry a pod template."""
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: dict) -> dict:
    """The pod spec of a workload's template."""
    return workload["spec"]["template"]["spec"]


def containers(spec: dict) -> Iterator[dict]:
    """Init containers and containers of a pod spec."""
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def matches(selector: dict, labels: dict) -> bool:
    """True when every key/value of the selector is among the labels."""
    return all(labels.get(key) == value for key, value in selector.items())


def kustomization(overlay: str) -> dict:
    """The kustomization.yaml of an overlay."""
    return load_documents(OVERLAYS / overlay / "kustomization.yaml")[0]


def overlay_resources(overlay: str) -> list[Path]:
    """The files an overlay takes as resources, resolved."""
    folder = OVERLAYS / overlay
    return [(folder / entry).resolve() for entry in kustomization(overlay)["resources"]]


def overlay_patch(overlay: str, kind: str, name: str) -> dict | None:
    """The strategic-merge patch file of an overlay for one object, if any."""
    folder = OVERLAYS / overlay
    for entry in kustomization(overlay).get("patches", []):
        if "path" not in entry:
            continue
        for doc in load_documents(folder / entry["path"]):
            if doc.get("kind") == kind and doc["metadata"]["name"] == name:
                return doc
    return None


def overlay_image(overlay: str, image: str) -> str:
    """The image reference after the overlay's `images:` transformation."""
    name, _, tag = image.partition(":")
    for entry in kustomization(overlay).get("images", []):
        if entry["name"] == name:
            name = entry.get("newName", name)
            tag = str(entry.get("newTag", tag))
            if "digest" in entry:
                return f"{name}:{tag}@{entry['digest']}"
    return f"{name}:{tag}"


def container_port(container: dict, port: int | str) -> int | None:
    """The number of a container port given by number or by name; None when there is no such port."""
    for declared in container.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            return declared["containerPort"]
    return None
