"""Admission: on EKS only the image CI signed keylessly on main starts in the API's namespaces.

Neither policy-controller nor Helm can run here. Upstream files are vendored at the pinned versions
(tests/gitops/upstream/policy-controller, SOURCE and SHA256SUMS): the chart's Chart.yaml, values.yaml and
values.schema.json, the ClusterImagePolicy CRD and the glob matcher of policy-controller v0.13.1, and the
action.yml of the cosign-installer commit ci.yml pins with the `cosign sign` flags of the release it installs.
The signature the policy asks for is read from .github/workflows/ci.yml, the workflow that makes and
verifies it. A Dependabot update of cosign-installer fails here until the vendored files follow it.
"""

from __future__ import annotations

import functools
import re

import jsonschema
import pytest
import yaml

from tests.gitops.crds import crd_schemas, schema_errors
from tests.gitops.rendered import (
    ENVIRONMENTS,
    REPO_URL,
    applications,
    chart_source,
    merge_values,
    render,
    source_values,
    unknown_keys,
)
from tests.gitops.upstream import vendored
from tests.infrastructure.test_invariants import INFRA, _labelled, _load_folder
from tests.kube.manifests import KUBE_CONFIG, REPO, containers, pod_spec, workloads

EKS = ("staging", "prod")
CHART = "policy-controller"
CI = REPO / ".github" / "workflows" / "ci.yml"
WAVE = "argocd.argoproj.io/sync-wave"
# The label the webhook's namespace selector asks for (the chart's default, which the values keep).
INCLUDE = "policy.sigstore.dev/include"
# Maps whose keys the chart passes through as they are: the policy-controller's own settings (config-policy-
# controller), a container securityContext.
PASS_THROUGH = frozenset({"configData", "podSecurityContext"})
# GitHub's values of the workflow expressions the verify job's identity is made of, for this repository.
GITHUB_SERVER_URL = "https://github.com"
GITHUB_REPOSITORY = REPO_URL.removeprefix(f"{GITHUB_SERVER_URL}/").removesuffix(".git")
# The translation steps of policy-controller's glob.Compile, in its order (upstream glob.go, checked below).
# The commit of sigstore/cosign-installer v4.1.1, which ci.yml pins (vendored action.yml, SOURCE).
COSIGN_INSTALLER_COMMIT = "cad07c2e89fa2edd6e2d7bab4c1aa38e53f76003"
GLOB_STEPS = (
    ('strings.ReplaceAll(glob, ".", `\\.`)', ".", r"\."),
    ('strings.ReplaceAll(glob, "**", "#")', "**", "#"),
    ('strings.ReplaceAll(glob, "*", "[^/]*")', "*", "[^/]*"),
    ('strings.ReplaceAll(glob, "#", ".*")', "#", ".*"),
)


def glob_matches(glob: str, image: str) -> bool:
    """policy-controller's glob.Match for a fully qualified reference: the translated glob matches it all."""
    assert re.fullmatch(r"[a-zA-Z0-9-_:/*.@]+", glob), glob
    for _, old, new in GLOB_STEPS:
        glob = glob.replace(old, new)
    return re.fullmatch(glob, image) is not None


def vendored_source() -> str:
    return (REPO / "tests" / "gitops" / "upstream" / CHART / "SOURCE").read_text(encoding="utf-8")


@functools.cache
def chart_defaults() -> dict:
    return yaml.safe_load(vendored(CHART, "values.yaml"))


def webhook_values(env: str) -> dict:
    """The chart's webhook values once the Application's are laid over its defaults."""
    return merge_values(chart_defaults(), source_values(chart_source(env, CHART)))["webhook"]


def policies(env: str) -> list[dict]:
    return [o for o in render(f"overlays/{env}") if o["kind"] == "ClusterImagePolicy"]


def images_by_workload(env: str) -> dict[tuple[str, str, str], set[str]]:
    """(kind, namespace, name) -> the images of every workload of the environment's overlay."""
    return {
        (w["kind"], w["metadata"]["namespace"], w["metadata"]["name"]): {
            c["image"] for c in containers(pod_spec(w))
        }
        for w in workloads(render(f"overlays/{env}"))
    }


def release_image() -> str:
    settings = (KUBE_CONFIG / "overlays" / "eks" / "release.env").read_text(encoding="utf-8")
    return dict(line.split("=", 1) for line in settings.splitlines() if line)["IMAGE"]


def ci_verify_identity() -> tuple[str, str]:
    """(issuer, subject) that the verify job's `cosign verify` accepts, with GitHub's values filled in."""
    (step,) = [
        s for s in yaml.safe_load(CI.read_text(encoding="utf-8"))["jobs"]["verify"]["steps"] if "run" in s
    ]
    assert step["run"].startswith("cosign verify ")
    (issuer,) = re.findall(r"--certificate-oidc-issuer\s+(\S+)", step["run"])
    assert re.findall(r"--certificate-identity\s+(\S+)", step["run"]) == ['"$IDENTITY"']
    subject = (
        step["env"]["IDENTITY"]
        .replace("${{ github.server_url }}", GITHUB_SERVER_URL)
        .replace("${{ github.repository }}", GITHUB_REPOSITORY)
    )
    assert "${{" not in subject, subject
    return issuer, subject


def test_the_vendored_chart_is_the_version_the_application_pins():
    chart = yaml.safe_load(vendored(CHART, "Chart.yaml"))
    assert (chart["name"], chart["version"], chart["appVersion"]) == (CHART, "0.10.6", "0.13.1")
    for env in EKS:
        source = chart_source(env, CHART)
        assert (source["repoURL"], source["chart"]) == ("https://sigstore.github.io/helm-charts", CHART)
        assert source["targetRevision"] == chart["version"]
    # The CRD and the glob matcher come from the policy-controller release the chart runs.
    assert f"tag: v{chart['appVersion']} (the chart's appVersion)" in vendored_source()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_only_eks_environments_run_the_webhook_and_the_policy(env):
    assert (CHART in applications(env)) is (env in EKS)
    assert bool(policies(env)) is (env in EKS)
    labelled = [o for o in render(f"overlays/{env}") if INCLUDE in o["metadata"].get("labels", {})]
    assert bool(labelled) is (env in EKS)


@pytest.mark.parametrize("env", EKS)
def test_the_webhook_is_a_platform_application_synced_before_the_api(env):
    apps = applications(env)
    app = apps[CHART]
    assert app["spec"]["project"] == "platform"
    assert app["spec"]["destination"]["namespace"] == "cosign-system"
    assert int(app["metadata"]["annotations"][WAVE]) < int(
        apps[f"flask-api-{env}"]["metadata"]["annotations"][WAVE]
    )
    assert "automated" in app["spec"]["syncPolicy"]


@pytest.mark.parametrize("env", EKS)
def test_every_value_is_a_key_of_the_chart_and_valid_under_its_schema(env):
    committed = source_values(chart_source(env, CHART))
    assert unknown_keys(committed, chart_defaults(), PASS_THROUGH) == []
    schema = yaml.safe_load(vendored(CHART, "values.schema.json"))
    merged = merge_values(chart_defaults(), committed)
    assert [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(merged)] == []


@pytest.mark.parametrize("env", EKS)
def test_the_webhook_refuses_unmatched_images_and_outlives_a_node_drain(env):
    values = webhook_values(env)
    assert values["configData"]["no-match-policy"] == "deny"
    assert values["failurePolicy"] == "Fail"
    # The chart's disruption budget keeps minAvailable 1: one replica alone would block every drain.
    assert values["podDisruptionBudget"] == {"enabled": True, "minAvailable": 1}
    assert values["replicaCount"] == 2


@pytest.mark.parametrize("env", EKS)
def test_the_charts_containers_pass_pod_security_restricted(env):
    # The webhook and the post-delete leases Job: the chart writes podSecurityContext as the container's.
    values = merge_values(chart_defaults(), source_values(chart_source(env, CHART)))
    for part in ("webhook", "leasescleanup"):
        context = values[part]["podSecurityContext"]
        assert context["enabled"] is True, part
        assert context["allowPrivilegeEscalation"] is False, part
        assert context["runAsNonRoot"] is True, part
        assert context["capabilities"]["drop"] == ["ALL"], part
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, part
    labels = applications(env)[CHART]["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("env", EKS)
def test_every_workload_running_the_api_image_is_in_a_namespace_the_webhook_watches(env):
    objects = render(f"overlays/{env}")
    namespaces = {
        o["metadata"]["name"]: o["metadata"].get("labels", {}) for o in objects if o["kind"] == "Namespace"
    }
    selector = webhook_values(env)["namespaceSelector"]
    assert selector == {"matchExpressions": [{"key": INCLUDE, "operator": "In", "values": ["true"]}]}
    running = {key for key, images in images_by_workload(env).items() if release_image() in images}
    assert running == {
        ("Deployment", "flask-api", "flask-api"),
        ("Job", "flask-api-migrate", "flask-api-migrate"),
    }
    for _, namespace, name in running:
        assert namespaces[namespace].get(INCLUDE) == "true", name


@pytest.mark.parametrize("env", EKS)
def test_the_policy_matches_every_image_the_overlay_runs(env):
    (policy,) = policies(env)
    globs = [entry["glob"] for entry in policy["spec"]["images"]]
    images = set().union(*images_by_workload(env).values())
    assert images == {release_image()}
    for image in images:
        assert any(glob_matches(glob, image) for glob in globs), image
    # What kube_config/scripts/pin-image-eks.sh writes for this repository's image is matched too; another
    # owner's image or a public base image is not.
    assert any(glob_matches(g, "ghcr.io/flask-api/flask-api@sha256:" + "ab" * 32) for g in globs)
    assert not any(glob_matches(g, "ghcr.io/someone-else/flask-api@sha256:" + "ab" * 32) for g in globs)
    assert not any(glob_matches(g, "index.docker.io/library/python:3.13-slim") for g in globs)


def test_the_glob_translation_is_the_one_of_the_vendored_policy_controller():
    source = vendored(CHART, "glob.go")
    positions = [source.index(f"glob = {call}") for call, _, _ in GLOB_STEPS]
    assert positions == sorted(positions)
    assert 'fmt.Sprintf("^%s$", glob)' in source
    assert "`^[a-zA-Z0-9-_:\\/\\*\\.@]+$`" in source


@pytest.mark.parametrize("env", EKS)
def test_the_policy_asks_for_the_signature_ci_verifies(env):
    (policy,) = policies(env)
    (authority,) = policy["spec"]["authorities"]
    issuer, subject = ci_verify_identity()
    assert issuer == "https://token.actions.githubusercontent.com"
    assert authority["keyless"]["identities"] == [{"issuer": issuer, "subject": subject}]
    # The public Fulcio cosign signs with when the workflow names none.
    assert authority["keyless"]["url"] == "https://fulcio.sigstore.dev"
    assert "key" not in authority


@pytest.mark.parametrize("env", EKS)
def test_the_policy_reads_the_signature_format_the_workflows_cosign_writes(env):
    # cosign-installer, pinned by commit in ci.yml, installs its default release; that release's `cosign sign`
    # writes a Sigstore bundle unless told otherwise. policy-controller reads the legacy format by default.
    jobs = yaml.safe_load(CI.read_text(encoding="utf-8"))["jobs"]
    for job in ("push", "verify"):
        (installer,) = [
            s for s in jobs[job]["steps"] if s.get("uses", "").startswith("sigstore/cosign-installer@")
        ]
        assert installer["uses"] == f"sigstore/cosign-installer@{COSIGN_INSTALLER_COMMIT}"
        assert "cosign-release" not in installer.get("with", {})
    assert f"commit: {COSIGN_INSTALLER_COMMIT}" in vendored_source()
    action = yaml.safe_load(vendored(CHART, "cosign-installer-action.yml"))
    assert action["inputs"]["cosign-release"]["default"] == "v3.0.5"
    assert "tag: v3.0.5 (that default release)" in vendored_source()
    flags = vendored(CHART, "cosign-sign-options.go")
    assert 'BoolVar(&o.NewBundleFormat, "new-bundle-format", true,' in flags
    (sign,) = [s["run"] for s in jobs["push"]["steps"] if "cosign sign" in s.get("run", "")]
    assert "--new-bundle-format" not in sign
    (policy,) = policies(env)
    assert [a["signatureFormat"] for a in policy["spec"]["authorities"]] == ["bundle"]


def test_ci_signs_keylessly_only_on_main_which_the_identity_names():
    jobs = yaml.safe_load(CI.read_text(encoding="utf-8"))["jobs"]
    assert jobs["push"]["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert jobs["push"]["permissions"]["id-token"] == "write"
    (sign,) = [s["run"] for s in jobs["push"]["steps"] if "cosign sign" in s.get("run", "")]
    assert "--key" not in sign
    assert ci_verify_identity()[1].endswith("/.github/workflows/ci.yml@refs/heads/main")


@pytest.mark.parametrize("env", EKS)
def test_the_policy_is_valid_under_the_vendored_crd(env):
    schemas = crd_schemas([yaml.safe_load(vendored(CHART, "clusterimagepolicy.yaml"))])
    (policy,) = policies(env)
    assert schema_errors(policy, schemas[policy["apiVersion"], policy["kind"]]) == []


@pytest.mark.parametrize("env", EKS)
def test_the_policy_and_the_label_come_before_the_pods_they_admit(env):
    objects = render(f"overlays/{env}")
    (policy,) = policies(env)
    first_pods = min(int(w["metadata"]["annotations"][WAVE]) for w in workloads(objects))
    assert int(policy["metadata"]["annotations"][WAVE]) < first_pods
    for namespace in (o for o in objects if o["kind"] == "Namespace"):
        assert int(namespace["metadata"]["annotations"][WAVE]) < first_pods


def test_the_control_plane_reaches_the_webhook_port_through_the_node_security_group():
    # The webhook listens on 8443; the EKS module's recommended node rules open it from the control plane.
    eks = _labelled(_load_folder(INFRA), "module")["eks"]
    assert eks.get("node_security_group_enable_recommended_rules", True) is True
