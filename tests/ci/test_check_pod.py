"""The kubelet translation of .ci/check_pod.py (make check-pod), on the real manifests, without docker."""

from __future__ import annotations

import importlib.util
import stat
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("check_pod", REPO_ROOT / ".ci" / "check_pod.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_pod"] = module
    spec.loader.exec_module(module)
    return module


check_pod = _load()

SECRETS = {
    "flask-api-db-admin": {
        "url": "postgresql://flask_api@flask-api-postgres:5432/flask_api",
        "password": "a" * 48,
    },
    "flask-api-db": {
        "url": "postgresql://flask_api_app@flask-api-postgres:5432/flask_api",
        "password": "b" * 48,
    },
    "flask-api-secrets": {"SECRET_KEY": "c" * 64},
}


@pytest.fixture
def pod(tmp_path: Path):
    objects = check_pod.base_manifests()
    deployment = check_pod.find(objects, "Deployment", "flask-api")
    configmap = check_pod.find(objects, "ConfigMap", "flask-api-config")
    return check_pod.Pod(
        spec=deployment["spec"]["template"]["spec"],
        configmaps={"flask-api-config": {key: str(value) for key, value in configmap["data"].items()}},
        secrets={name: dict(data) for name, data in SECRETS.items()},
        hosts={"flask-api-postgres": "127.0.0.1"},
        image="flask-api:check",
        folder=tmp_path,
        memory_tmpfs=False,
    )


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_the_migrate_init_container_runs_as_the_manifest_says(pod):
    init = pod.spec["initContainers"][0]

    args, path = pod.docker_run(init, "migrate", detach=False)

    joined = " ".join(args)
    for option in ("--user 10001:10001", "--group-add 10001", "--read-only", "--cap-drop=ALL"):
        assert option in joined
    assert "--security-opt no-new-privileges" in joined
    assert f"{pod.folder}/volumes/database-admin:/run/secrets/database-admin:ro" in args
    assert args[-4:] == ["python", "flask-api:check", "-m", "src.migrate"]
    env = env_file(path)
    assert env["DATABASE_URL"] == SECRETS["flask-api-db-admin"]["url"]
    assert env["DATABASE_APP_URL"] == SECRETS["flask-api-db"]["url"]
    assert env["DATABASE_WAIT_SECONDS"] == "300"
    assert env["PORT"] == "8888"  # from the ConfigMap, through envFrom
    password = pod.folder / "volumes" / "database-admin" / "password"
    assert password.read_text() == "a" * 48
    assert stat.S_IMODE(password.stat().st_mode) == 0o440
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_api_container_keeps_the_image_entrypoint_and_gets_the_app_role(pod):
    args, path = pod.docker_run(pod.spec["containers"][0], "api", detach=True)

    assert args[-1] == "flask-api:check"
    assert "--entrypoint" not in args
    assert "--memory" in args
    assert args[args.index("--memory") + 1] == str(768 * 2**20)
    env = env_file(path)
    assert env["DATABASE_URL"] == SECRETS["flask-api-db"]["url"]
    assert env["SECRET_KEY"] == "c" * 64
    assert "DATABASE_APP_URL" not in env


def test_the_api_container_gets_the_previous_signing_key_while_its_secret_exists(pod):
    pod.secrets["flask-api-secrets-previous"] = {"SECRET_KEY_PREVIOUS": "d" * 64}
    _, path = pod.docker_run(pod.spec["containers"][0], "api", detach=True)
    env = env_file(path)
    assert (env["SECRET_KEY"], env["SECRET_KEY_PREVIOUS"]) == ("c" * 64, "d" * 64)


def test_a_missing_secret_key_stops_the_pod_like_create_container_config_error(pod):
    del pod.secrets["flask-api-secrets"]["SECRET_KEY"]

    with pytest.raises(check_pod.PodError, match="flask-api-secrets has no key SECRET_KEY"):
        pod.docker_run(pod.spec["containers"][0], "api", detach=True)


def test_variables_expand_as_kubernetes_expands_them():
    env = {"PORT": "8888"}

    assert check_pod.expand("--bind=:$(PORT) $(MISSING) $$(PORT)", env) == "--bind=:8888 $(MISSING) $(PORT)"


def test_quantities_are_read_as_kubernetes_reads_them():
    assert [check_pod.quantity(q) for q in ("768Mi", "500m", "1", "64Mi")] == [805306368, 0.5, 1, 67108864]
