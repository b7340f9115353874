"""What a real cluster, an AWS account and a first workflow run depend on, checked on the rendered overlays.

Rendering uses the real ``kubectl kustomize`` (as .ci/check-kube.sh and the workflow do). The secret script
runs against tests/kube/fake_kubectl.py, a stand-in for a cluster's API, which cannot run here.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import in_ci

from .conftest import run_k3d_script, secrets_in
from .manifests import KUBE_CONFIG, OVERLAYS, containers, find, one, pod_spec, workloads

DIGEST_REFERENCE = re.compile(r"^ghcr\.io/[a-z0-9][a-z0-9-]*/flask-api@sha256:[0-9a-f]{64}$")


def render(kube_config: Path, overlay: str) -> list[dict]:
    """``kubectl kustomize`` of one overlay of a kube_config folder, as objects."""
    if shutil.which("kubectl") is None:
        message = "kubectl not found: the overlays cannot be rendered"
        if in_ci():
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message)
    result = subprocess.run(
        [
            "kubectl",
            "kustomize",
            "--load-restrictor",
            "LoadRestrictionsNone",
            str(kube_config / "overlays" / overlay),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    import yaml

    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=["k3d", "eks"])
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(KUBE_CONFIG, request.param)


@pytest.fixture(scope="module")
def eks() -> list[dict]:
    return render(KUBE_CONFIG, "eks")


@pytest.fixture
def kube_config_copy(tmp_path) -> Path:
    """A copy of kube_config/ whose overlay files a test may rewrite."""
    copy = tmp_path / "kube_config"
    shutil.copytree(KUBE_CONFIG, copy)
    return copy


def images(deployment: dict) -> set[str]:
    spec = pod_spec(deployment)
    return {c["image"] for c in [*spec.get("initContainers", []), *spec["containers"]]}


# --- 1. EKS pulls an image the workflow pushed, by digest, from a possibly private registry ---------------


def test_eks_deploys_a_flask_api_image_from_ghcr_pinned_by_digest(eks):
    for reference in images(one(eks, "Deployment", "flask-api")):
        assert DIGEST_REFERENCE.match(reference), reference


def test_eks_pods_pull_with_the_ghcr_pull_secret(eks):
    # The API's pods and the migration Job's run the same image, each in its own namespace.
    pulled_by = {
        (workload["metadata"]["namespace"], pod_spec(workload)["serviceAccountName"])
        for workload in workloads(eks)
        if any(container["image"].startswith("ghcr.io/") for container in containers(pod_spec(workload)))
    }
    assert pulled_by == {("flask-api", "flask-api"), ("flask-api-migrate", "flask-api-migrate")}
    for namespace, name in pulled_by:
        (account,) = [
            account
            for account in find(eks, "ServiceAccount", name)
            if account["metadata"]["namespace"] == namespace
        ]
        assert account["imagePullSecrets"] == [{"name": "ghcr-pull"}], (namespace, name)


def test_pull_secret_script_writes_ghcr_pull_in_each_namespace_that_runs_the_image(tmp_path):
    result = run_k3d_script(tmp_path, "create-pull-secret-eks.sh", args=["octocat"], stdin="ghp_token123\n")

    assert result.returncode == 0, result.stderr
    expected = base64.b64encode(b"octocat:ghp_token123").decode()
    for namespace in ("flask-api", "flask-api-migrate"):
        secret = secrets_in(tmp_path, namespace)["ghcr-pull"]
        assert json.loads(secret[".dockerconfigjson"]) == {"auths": {"ghcr.io": {"auth": expected}}}
    assert "ghp_token123" not in result.stdout + result.stderr


def test_pin_script_puts_the_pushed_digest_into_the_rendered_eks_overlay(kube_config_copy):
    pushed = "ghcr.io/acme-corp/flask-api@sha256:" + "ab" * 32
    result = subprocess.run(
        [str(kube_config_copy / "scripts" / "pin-image-eks.sh"), pushed],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert images(one(render(kube_config_copy, "eks"), "Deployment", "flask-api")) == {pushed}


@pytest.mark.parametrize(
    "reference",
    [
        "ghcr.io/acme-corp/flask-api:1.0.0",
        "ghcr.io/acme-corp/flask-api@sha256:abc",
        "docker.io/x/flask-api@sha256:" + "0" * 64,
        "ghcr.io/acme-corp/flask-api@sha256:" + "0" * 64,
    ],
)
def test_pin_script_refuses_anything_but_a_ghcr_digest(kube_config_copy, reference):
    release = kube_config_copy / "overlays" / "eks" / "release.env"
    before = release.read_text()
    result = subprocess.run(
        [str(kube_config_copy / "scripts" / "pin-image-eks.sh"), reference],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert release.read_text() == before


# --- 2. Database credentials follow rotation: files from synced Secrets, the app's own role --------------


def test_the_app_reads_its_own_role_password_from_a_secret_volume_that_follows_the_secret(rendered):
    _, objects = rendered
    spec = pod_spec(one(objects, "Deployment", "flask-api"))
    (app,) = spec["containers"]
    env = {e["name"]: e for e in app["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "flask-api-db", "key": "url"}
    assert env["DATABASE_PASSWORD_FILE"]["value"] == "/run/secrets/database/password"
    (mount,) = [m for m in app["volumeMounts"] if m["name"] == "database"]
    assert mount["mountPath"] == "/run/secrets/database"
    assert "subPath" not in mount, "a subPath mount never sees a changed Secret"
    (volume,) = [v for v in spec["volumes"] if v["name"] == "database"]
    assert volume["secret"]["secretName"] == "flask-api-db"
    assert "flask-api-db-admin" not in json.dumps(app), "only the migration holds the owner's credentials"


def test_eks_secrets_come_from_secrets_manager_refreshed_every_minute(eks):
    for name in ("flask-api-db", "flask-api-db-admin"):
        external = one(eks, "ExternalSecret", name)
        assert external["spec"]["refreshInterval"] == "1m"
        assert external["spec"]["target"]["name"] == name
        keys = {ref["remoteRef"]["key"] for ref in external["spec"]["data"]}
        assert all(key.startswith("arn:aws:secretsmanager:") for key in keys), keys
        store = one(eks, "SecretStore", external["spec"]["secretStoreRef"]["name"])
        assert store["spec"]["provider"]["aws"]["service"] == "SecretsManager"


def test_each_eks_secret_store_authenticates_as_its_own_service_account_with_its_own_role(eks):
    stores = find(eks, "SecretStore")
    assert len(stores) == 2
    accounts = set()
    for store in stores:
        auth = store["spec"]["provider"]["aws"].get("auth", {})
        # Without auth a store borrows the operator's identity, which any namespace's store would share.
        assert "jwt" in auth, store["metadata"]["name"]
        account = one(eks, "ServiceAccount", auth["jwt"]["serviceAccountRef"]["name"])
        assert account["metadata"]["namespace"] == store["metadata"]["namespace"]
        role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role)
        assert account["automountServiceAccountToken"] is False
        accounts.add(role)
    assert len(accounts) == 2, "the two stores share one IAM role"


def test_only_the_migrations_store_reads_the_rds_master_secret(eks):
    master = {
        ref["remoteRef"]["key"]
        for ref in one(eks, "ExternalSecret", "flask-api-db-admin")["spec"]["data"]
        if ref["secretKey"] in ("username", "password")
    }
    (master_arn,) = master
    assert ":secret:rds!" in master_arn
    readers = {
        external["spec"]["secretStoreRef"]["name"]
        for external in find(eks, "ExternalSecret")
        if any(ref["remoteRef"]["key"] == master_arn for ref in external["spec"].get("data", []))
    }
    app_store = one(eks, "ExternalSecret", "flask-api-db")["spec"]["secretStoreRef"]["name"]
    assert readers == {"db-migration"}
    assert app_store not in readers


# --- 3. HTTPS on the ALB, HTTP only redirects --------------------------------------------------------------


def test_eks_alb_listens_on_https_with_a_certificate_and_redirects_http(eks):
    annotations = one(eks, "Ingress", "flask-api")["metadata"]["annotations"]
    assert json.loads(annotations["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
    assert annotations["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert re.fullmatch(
        r"arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+",
        annotations["alb.ingress.kubernetes.io/certificate-arn"],
    )
    assert annotations["alb.ingress.kubernetes.io/ssl-policy"].startswith("ELBSecurityPolicy-TLS13")


# --- 4. The autoscaler owns the pod count -------------------------------------------------------------------


def test_no_rendered_deployment_carries_replicas_where_an_autoscaler_owns_the_count(rendered):
    overlay, objects = rendered
    for autoscaler in find(objects, "HorizontalPodAutoscaler"):
        target = autoscaler["spec"]["scaleTargetRef"]
        deployment = one(objects, target["kind"], target["name"])
        assert "replicas" not in deployment["spec"], f"{overlay}: an apply would reset the autoscaler's count"


# --- 7. The EKS NetworkPolicy follows the real subnets ------------------------------------------------------


def test_eks_policy_cidrs_follow_infrastructure_env_for_another_vpc_cidr(kube_config_copy):
    settings = (kube_config_copy / "overlays" / "eks" / "infrastructure.env").read_text()
    for number in range(1, 4):
        settings = re.sub(
            rf"PUBLIC_SUBNET_CIDR_{number}=.*",
            f"PUBLIC_SUBNET_CIDR_{number}=172.20.{47 + number}.0/24",
            settings,
        )
        settings = re.sub(
            rf"DATABASE_SUBNET_CIDR_{number}=.*",
            f"DATABASE_SUBNET_CIDR_{number}=172.20.{51 + number}.0/24",
            settings,
        )
    (kube_config_copy / "overlays" / "eks" / "infrastructure.env").write_text(settings)

    policy = one(render(kube_config_copy, "eks"), "NetworkPolicy", "flask-api")["spec"]

    alb = [peer["ipBlock"]["cidr"] for peer in policy["ingress"][0]["from"]]
    database = [peer["ipBlock"]["cidr"] for peer in policy["egress"][1]["to"]]
    assert alb == ["172.20.48.0/24", "172.20.49.0/24", "172.20.50.0/24"]
    assert database == ["172.20.52.0/24", "172.20.53.0/24", "172.20.54.0/24"]


def test_the_eks_policy_patch_holds_no_literal_range():
    text = (OVERLAYS / "eks" / "networkpolicy.yaml").read_text()
    assert not re.search(r"cidr:\s*\d", text)


# --- 11. The migration waits for PostgreSQL instead of crash-looping ----------------------------------------


def test_the_migration_init_container_waits_a_bounded_time_for_the_database(rendered):
    _, objects = rendered
    migrations = [*pod_spec(one(objects, "Deployment", "flask-api")).get("initContainers", [])]
    migrations += [c for job in find(objects, "Job") for c in pod_spec(job)["containers"]]
    (migrate,) = migrations
    wait = {e["name"]: e.get("value") for e in migrate["env"]}["DATABASE_WAIT_SECONDS"]
    assert 60 <= int(wait) <= 600


# --- 12. The k3d secret script completes any partial set ----------------------------------------------------


def test_k3d_script_creates_the_four_secrets_with_matching_passwords(k3d_secrets):
    assert sorted(k3d_secrets) == [
        "flask-api-db",
        "flask-api-db-admin",
        "flask-api-postgres",
        "flask-api-secrets",
    ]
    assert (
        k3d_secrets["flask-api-db-admin"]["password"]
        == k3d_secrets["flask-api-postgres"]["POSTGRES_PASSWORD"]
    )
    assert (
        k3d_secrets["flask-api-db-admin"]["url"] == "postgresql://flask_api@flask-api-postgres:5432/flask_api"
    )
    assert (
        k3d_secrets["flask-api-db"]["url"] == "postgresql://flask_api_app@flask-api-postgres:5432/flask_api"
    )
    assert k3d_secrets["flask-api-db"]["password"] != k3d_secrets["flask-api-db-admin"]["password"]
    assert len(k3d_secrets["flask-api-secrets"]["SECRET_KEY"]) == 64


def test_k3d_script_run_twice_keeps_every_value(tmp_path):
    assert run_k3d_script(tmp_path).returncode == 0
    first = secrets_in(tmp_path)
    second_run = run_k3d_script(tmp_path)
    assert second_run.returncode == 0, second_run.stderr
    assert secrets_in(tmp_path) == first


@pytest.mark.parametrize("kept", ["flask-api-secrets", "flask-api-postgres", "flask-api-db"])
def test_k3d_script_completes_a_partial_set_and_keeps_what_exists(tmp_path, kept):
    assert run_k3d_script(tmp_path).returncode == 0
    complete = secrets_in(tmp_path)
    for path in (tmp_path / "cluster" / "flask-api").glob("*.json"):
        if path.stem != kept:
            path.unlink()

    result = run_k3d_script(tmp_path)

    assert result.returncode == 0, result.stderr
    after = secrets_in(tmp_path)
    assert sorted(after) == sorted(complete)
    assert after[kept] == complete[kept]
    assert after["flask-api-db-admin"]["password"] == after["flask-api-postgres"]["POSTGRES_PASSWORD"]


# --- 3. The signing key's rotation: the previous key, optional, in every overlay ----------------------------


@pytest.mark.parametrize("overlay", ["k3d", "eks", "dev", "staging", "prod", "selfhosted"])
def test_every_overlay_passes_the_previous_signing_key_when_its_secret_exists(overlay):
    spec = pod_spec(one(render(KUBE_CONFIG, overlay), "Deployment", "flask-api"))
    (app,) = spec["containers"]
    env = {e["name"]: e for e in app["env"]}
    assert env["SECRET_KEY_PREVIOUS"]["valueFrom"]["secretKeyRef"] == {
        "name": "flask-api-secrets-previous",
        "key": "SECRET_KEY_PREVIOUS",
        "optional": True,
    }
    # Only the API verifies tokens: the migration never gets a signing key.
    for init in spec.get("initContainers", []):
        assert not {"SECRET_KEY", "SECRET_KEY_PREVIOUS"} & {e["name"] for e in init.get("env", [])}


# --- 4. The RDS master user stays in the migration's namespace ----------------------------------------------

EKS_OVERLAYS = ["eks", "staging", "prod"]


def infrastructure_env(overlay: str) -> dict[str, str]:
    """eks's infrastructure.env, with staging's own values laid over it."""
    values = {}
    for name in ("eks", "staging") if overlay == "staging" else ("eks",):
        text = (OVERLAYS / name / "infrastructure.env").read_text(encoding="utf-8")
        values.update(line.split("=", 1) for line in text.splitlines() if line)
    return values


@pytest.mark.parametrize("overlay", EKS_OVERLAYS)
def test_nothing_in_the_api_namespace_can_reach_the_master_secret(overlay):
    objects = render(KUBE_CONFIG, overlay)
    master_arn = infrastructure_env(overlay)["DB_MASTER_SECRET_ARN"]
    api_namespace = [o for o in objects if o["metadata"].get("namespace") == "flask-api"]
    assert one(objects, "Deployment", "flask-api") in api_namespace
    for obj in api_namespace:
        text = json.dumps(obj)
        for needle in (master_arn, "flask-api-db-admin", "db-migration"):
            assert needle not in text, (obj["kind"], obj["metadata"]["name"], needle)
    assert master_arn in json.dumps(one(objects, "ExternalSecret", "flask-api-db-admin"))


@pytest.mark.parametrize("overlay", EKS_OVERLAYS)
def test_the_migration_job_finds_every_secret_it_reads_made_by_a_store_of_its_own_namespace(overlay):
    objects = render(KUBE_CONFIG, overlay)
    job = one(objects, "Job", "flask-api-migrate")
    namespace = job["metadata"]["namespace"]
    assert namespace == "flask-api-migrate"
    spec = pod_spec(job)
    read = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for c in spec["containers"]
        for e in c["env"]
        if "valueFrom" in e
    }
    read |= {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert read == {"flask-api-db-admin", "flask-api-db-app"}
    local = [o for o in objects if o["metadata"].get("namespace") == namespace]
    for name in read:
        (external,) = [o for o in find(local, "ExternalSecret") if o["spec"]["target"]["name"] == name]
        store = one(local, "SecretStore", external["spec"]["secretStoreRef"]["name"])
        account = one(
            local,
            "ServiceAccount",
            store["spec"]["provider"]["aws"]["auth"]["jwt"]["serviceAccountRef"]["name"],
        )
        role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        assert role == infrastructure_env(overlay)["DB_MIGRATION_SECRET_STORE_ROLE_ARN"]
    assert (
        spec["containers"][0]["image"]
        == pod_spec(one(objects, "Deployment", "flask-api"))["containers"][0]["image"]
    )


def test_the_migrations_role_trusts_the_service_account_of_the_migration_namespace(eks):
    from tests.infrastructure.test_invariants import INFRA, _labelled, _load_folder

    accounts = _labelled(_load_folder(INFRA), "variable")["db_secret_store_service_accounts"]["default"]
    for reader, store in (("app", "db-app"), ("migration", "db-migration")):
        (secret_store,) = find(eks, "SecretStore", store)
        name = secret_store["spec"]["provider"]["aws"]["auth"]["jwt"]["serviceAccountRef"]["name"]
        assert accounts[reader] == {"namespace": secret_store["metadata"]["namespace"], "name": name}
    assert accounts["migration"]["namespace"] == "flask-api-migrate"


@pytest.mark.parametrize("overlay", EKS_OVERLAYS)
def test_the_migration_reaches_dns_and_the_database_subnets_only(overlay):
    objects = render(KUBE_CONFIG, overlay)
    job = one(objects, "Job", "flask-api-migrate")
    policy = one(objects, "NetworkPolicy", "flask-api-migrate")
    assert policy["metadata"]["namespace"] == job["metadata"]["namespace"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy["spec"]
    dns, database = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert database["ports"] == [{"protocol": "TCP", "port": 5432}]
    settings = infrastructure_env(overlay)
    assert [t["ipBlock"]["cidr"] for t in database["to"]] == [
        settings[f"DATABASE_SUBNET_CIDR_{i}"] for i in (1, 2, 3)
    ]
