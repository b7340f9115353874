"""Argo CD: roots, projects and Applications tied to real paths, pinned charts and the kinds they deploy.

These tests check the fields that decide what Argo CD does (source, revision, destination, sync policy, waves,
project limits); test_argocd_install.py validates the same objects against the CRDs of the vendored install.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.gitops.rendered import ARGOCD, ENVIRONMENTS, REPO_URL, applications, render, render_path
from tests.kube.manifests import KUBE_CONFIG, REPO, load_documents

PINNED_CHARTS = {
    "kube-prometheus-stack": ("https://prometheus-community.github.io/helm-charts", "88.5.3"),
    "cloudnative-pg": ("https://cloudnative-pg.github.io/charts", "0.29.0"),
    "fluent-bit": ("https://fluent.github.io/helm-charts", "0.58.1"),
    "opensearch": ("https://opensearch-project.github.io/helm-charts", "3.6.0"),
    "external-secrets": ("https://charts.external-secrets.io", "2.9.0"),
    "aws-load-balancer-controller": ("https://aws.github.io/eks-charts", "3.5.0"),
    "cert-manager": ("https://charts.jetstack.io", "v1.21.1"),
    "cluster-autoscaler": ("https://kubernetes.github.io/autoscaler", "9.59.0"),
    "policy-controller": ("https://sigstore.github.io/helm-charts", "0.10.6"),
}
PLATFORM_BY_ENV = {
    "dev": {"kube-prometheus-stack", "opensearch", "fluent-bit", "cert-manager"},
    "staging": {
        "cert-manager",
        "kube-prometheus-stack",
        "opensearch",
        "fluent-bit",
        "external-secrets",
        "aws-load-balancer-controller",
        "cluster-autoscaler",
        "policy-controller",
    },
    "prod": {
        "kube-prometheus-stack",
        "opensearch",
        "fluent-bit",
        "external-secrets",
        "aws-load-balancer-controller",
        "cluster-autoscaler",
        "policy-controller",
    },
    "selfhosted": {"kube-prometheus-stack", "opensearch", "fluent-bit", "cloudnative-pg", "cert-manager"},
}


def sources(app: dict) -> list[dict]:
    return app["spec"].get("sources") or [app["spec"]["source"]]


def wave(obj: dict) -> int:
    return int(obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def projects(env: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in render(f"argocd/envs/{env}") if o["kind"] == "AppProject"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_root_syncs_its_environment_folder_from_this_repository(env):
    (root,) = load_documents(ARGOCD / "roots" / f"{env}.yaml")
    source = root["spec"]["source"]
    assert (source["repoURL"], source["targetRevision"]) == (REPO_URL, "main")
    assert source["path"] == f"kube_config/argocd/envs/{env}"
    assert (REPO / source["path"] / "kustomization.yaml").is_file()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_has_one_api_application_on_its_own_overlay(env):
    api = applications(env)[f"flask-api-{env}"]
    source = api["spec"]["source"]
    assert source["path"] == f"kube_config/overlays/{env}"
    assert (REPO / source["path"] / "kustomization.yaml").is_file()
    assert (source["repoURL"], api["spec"]["project"]) == (REPO_URL, "flask-api")
    assert api["spec"]["destination"]["namespace"] == "flask-api"
    assert [a for a in applications(env) if a.startswith("flask-api-")] == [f"flask-api-{env}"]


# staging too, once its files are pinned (test_pinning.py).
@pytest.mark.parametrize("env", ["dev", "selfhosted"])
def test_non_production_environments_sync_prune_and_heal_automatically(env):
    automated = applications(env)[f"flask-api-{env}"]["spec"]["syncPolicy"]["automated"]
    assert (automated["prune"], automated["selfHeal"]) == (True, True)


def test_prod_waits_for_a_manual_sync():
    assert "automated" not in applications("prod")["flask-api-prod"]["spec"]["syncPolicy"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_installs_exactly_its_platform_charts_at_pinned_versions(env):
    charts = {}
    for app in applications(env).values():
        for source in sources(app):
            if "chart" in source:
                charts[source["chart"]] = (source["repoURL"], source["targetRevision"])
    assert set(charts) == PLATFORM_BY_ENV[env]
    assert charts == {name: PINNED_CHARTS[name] for name in PLATFORM_BY_ENV[env]}
    assert all(re.fullmatch(r"v?\d+\.\d+\.\d+", version) for _, version in charts.values())


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_values_file_and_path_an_application_names_exists(env):
    for app in applications(env).values():
        for source in sources(app):
            for value_file in source.get("helm", {}).get("valueFiles", []):
                assert value_file.startswith("$values/")
                assert (REPO / value_file.removeprefix("$values/")).is_file(), value_file
            if "path" in source:
                assert (REPO / source["path"] / "kustomization.yaml").is_file(), source["path"]
            if source.get("ref") == "values" or "path" in source:
                # prod's revision is the promoted commit (test_promotion.py), the others follow main.
                assert source["repoURL"] == REPO_URL
                assert (source["targetRevision"] == "main") is (env != "prod")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_projects_allow_each_application_its_sources_and_destination(env):
    for app in applications(env).values():
        project = projects(env)[app["spec"]["project"]]["spec"]
        for source in sources(app):
            assert source["repoURL"] in project["sourceRepos"]
        destination = app["spec"]["destination"]
        assert {"server": destination["server"], "namespace": destination["namespace"]} in project[
            "destinations"
        ]


def test_the_api_project_takes_this_repository_only():
    assert projects("dev")["flask-api"]["spec"]["sourceRepos"] == [REPO_URL]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_api_project_whitelists_every_kind_its_applications_render(env):
    spec = projects(env)["flask-api"]["spec"]
    cluster_scoped = {(k["group"], k["kind"]) for k in spec["clusterResourceWhitelist"]}
    allowed = {(k["group"], k["kind"]) for k in spec["namespaceResourceWhitelist"]} | cluster_scoped
    destinations = {d["namespace"] for d in spec["destinations"]}
    for folder in (f"overlays/{env}", "monitoring"):
        for obj in render(folder):
            group = obj["apiVersion"].rpartition("/")[0]
            assert (group, obj["kind"]) in allowed, (folder, obj["kind"])
            if (group, obj["kind"]) not in cluster_scoped:
                assert obj["metadata"]["namespace"] in destinations, (folder, obj["kind"])


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_platform_comes_up_in_an_earlier_wave_than_the_api(env):
    apps = applications(env)
    api = apps[f"flask-api-{env}"]
    for name in PLATFORM_BY_ENV[env]:
        assert wave(apps[name]) < wave(api), name
    for project in projects(env).values():
        assert wave(project) < min(wave(a) for a in apps.values())


def test_monitoring_application_deploys_kube_config_monitoring():
    monitoring = applications("dev")["monitoring"]
    assert monitoring["spec"]["source"]["path"] == "kube_config/monitoring"
    assert monitoring["spec"]["destination"]["namespace"] == "monitoring"


@pytest.mark.parametrize(
    ("app", "level"),
    [
        ("cloudnative-pg", "restricted"),
        ("external-secrets", "restricted"),
        ("policy-controller", "restricted"),
        ("opensearch", "restricted"),
        ("kube-prometheus-stack", "privileged"),
        ("fluent-bit", "privileged"),
    ],
)
def test_each_created_platform_namespace_enforces_the_strictest_pod_security_its_chart_allows(app, level):
    (found,) = load_documents(ARGOCD / "apps" / f"{app}.yaml")
    sync = found["spec"]["syncPolicy"]
    assert "CreateNamespace=true" in sync["syncOptions"]
    labels = sync["managedNamespaceMetadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == level
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_charts_that_make_prometheus_operator_objects_come_after_its_crds(env):
    apps = applications(env)
    monitors = {"fluent-bit", "monitoring"} | ({"cloudnative-pg"} & set(apps))
    for name in monitors:
        assert wave(apps[name]) > wave(apps["kube-prometheus-stack"]), name


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_the_load_balancer_controller_runs_in_the_region_opentofu_wrote(env, tmp_path):
    # Another region in infrastructure.env reaches the controller with no edit of a values file.
    copy = tmp_path / "kube_config"
    shutil.copytree(KUBE_CONFIG, copy)
    settings = copy / "overlays" / "eks" / "infrastructure.env"
    settings.write_text(
        settings.read_text(encoding="utf-8").replace("REGION=us-east-1\n", "REGION=eu-central-1\n"),
        encoding="utf-8",
    )
    apps = {
        o["metadata"]["name"]: o
        for o in render_path(copy / "argocd" / "envs" / env)
        if o["kind"] == "Application"
    }
    (chart,) = [s for s in apps["aws-load-balancer-controller"]["spec"]["sources"] if "chart" in s]
    assert {"name": "region", "value": "eu-central-1"} in chart["helm"]["parameters"]
    for name in ("values.yaml", f"values-{env}.yaml"):
        assert (
            "region"
            not in load_documents(KUBE_CONFIG / "platform" / "aws-load-balancer-controller" / name)[0]
        )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_root_may_only_write_applications_and_projects_into_argocd(env):
    (root,) = load_documents(ARGOCD / "roots" / f"{env}.yaml")
    (project,) = load_documents(ARGOCD / "roots" / "project.yaml")
    assert root["spec"]["project"] == project["metadata"]["name"] != "default"
    spec = project["spec"]
    assert spec["sourceRepos"] == [REPO_URL]
    assert spec["destinations"] == [{"server": "https://kubernetes.default.svc", "namespace": "argocd"}]
    assert spec["clusterResourceWhitelist"] == []
    allowed = {(k["group"], k["kind"]) for k in spec["namespaceResourceWhitelist"]}
    assert allowed == {("argoproj.io", "Application"), ("argoproj.io", "AppProject")}
    for obj in render(f"argocd/envs/{env}"):
        assert (obj["apiVersion"].partition("/")[0], obj["kind"]) in allowed, obj["kind"]
        assert obj["metadata"]["namespace"] == "argocd"


def test_the_api_project_cannot_deploy_into_kube_system():
    spec = projects("dev")["flask-api"]["spec"]
    assert {d["namespace"] for d in spec["destinations"]} == {"flask-api", "monitoring", "flask-api-migrate"}


@pytest.mark.parametrize("env", ["dev", "selfhosted"])
def test_k3s_traefik_settings_reach_kube_system_through_the_platform_project(env):
    traefik = applications(env)["traefik"]
    assert (traefik["spec"]["project"], traefik["spec"]["destination"]["namespace"]) == (
        "platform",
        "kube-system",
    )
    (settings,) = render(traefik["spec"]["source"]["path"].removeprefix("kube_config/"))
    assert (settings["kind"], settings["metadata"]["namespace"], settings["metadata"]["name"]) == (
        "HelmChartConfig",
        "kube-system",
        "traefik",
    )
