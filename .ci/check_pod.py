"""Run the API's pod as a kubelet runs it, with `docker run`, against a real PostgreSQL; then use the API.

The pod is read from the manifests themselves (never from values copied here): the Deployment flask-api and
the ConfigMap flask-api-config of kube_config/ (the base, as k3d runs it), then of the selfhosted overlay as
kustomize renders it (the CloudNativePG wiring). For each, like the kubelet:

* the init containers run one after the other to completion, in as many pods at once as the first rollout
  starts (the HorizontalPodAutoscaler's minReplicas), then the main container of one pod starts;
* each container gets the manifest's command/args (``$(VAR)`` expanded), its env (``envFrom`` ConfigMaps,
  ``valueFrom`` ConfigMap and Secret keys; a missing key fails as CreateContainerConfigError does), its
  Secret volumes as files (items, mode, group fsGroup) mounted read-only at the same paths, its emptyDirs
  (one per pod, shared by its containers, a size-limited tmpfs for ``medium: Memory``), its user, group and
  fsGroup, read-only root, dropped capabilities, no privilege escalation and memory/cpu limits;
* the startup probe, then the readiness probe, are run with the manifest's period, timeout and thresholds;
* once ready, the API is used through the container port ``http``: register, authenticate, refresh,
  /users/me, logout; the liveness probe answers; the metrics port answers;
* the pod is deleted as the kubelet does it: the preStop hook, then SIGTERM with the grace period; the
  container must exit 0 in time, and every log line is JSON with no secret in it.

What differs from a cluster, by necessity: the image is the one built from this checkout (not the manifest's
registry tag); the pod shares the host's network (loopback only), so Service names resolve through
``--add-host`` to 127.0.0.1 and the database port is the harness server's; PostgreSQL is the harness's
(harness/postgres.py) with password authentication on loopback, bootstrapped as the Secrets script (k3d) or
the CloudNativePG operator (selfhosted) would: the operator itself, its instance manager, replicas and
failover cannot run here. The Secrets are generated here with fresh random values. One API container serves
(a second would find the host's ports taken); the probes are run once ready, not for the pod's whole life.
Not run at all: Services, the Ingress and Traefik, NetworkPolicies (nothing enforces them here), the
autoscaler, the PodDisruptionBudget, the ServiceAccount, and the PostgreSQL StatefulSet of 30-postgres.yaml.

Usage: .venv/bin/python .ci/check_pod.py --image flask-api:check [--variant base|selfhosted ...]
Exits 0 when every step passed; otherwise prints the failed step and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import yaml
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from harness.postgres import PostgresServer  # noqa: E402

DEPLOYMENT = "flask-api"
POD = "flask-api-pod"


class PodError(Exception):
    """One step of the run failed; the message says which and why."""


def log(message: str) -> None:
    print(f"check-pod: {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------------------


def base_manifests() -> list[dict]:
    """The objects of kube_config/*.yaml, as `kubectl apply -f kube_config/` reads them."""
    objects: list[dict] = []
    for path in sorted((REPO_ROOT / "kube_config").glob("*.yaml")):
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def kustomized_manifests(overlay: str) -> list[dict]:
    """The objects kustomize renders for an overlay (what `kubectl apply` receives)."""
    result = subprocess.run(
        ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(REPO_ROOT / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise PodError(f"kubectl kustomize {overlay} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict], kind: str, name: str) -> dict:
    for obj in objects:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    raise PodError(f"no {kind} {name} in the manifests")


# ---------------------------------------------------------------------------------------------------------
# Translation of a container into `docker run`
# ---------------------------------------------------------------------------------------------------------


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("768Mi", "500m", "1") as a number (bytes, cores)."""
    text = str(value)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a defined variable is replaced, $$ escapes, anything else stays."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", lambda m: env.get(m[1], m[0]) if m[1] else "$", text
    )


@dataclass
class Pod:
    """What the kubelet holds for one pod: its spec, the ConfigMaps and Secrets it may read, its folders."""

    spec: dict
    configmaps: dict[str, dict[str, str]]
    secrets: dict[str, dict[str, str]]
    hosts: dict[str, str]
    image: str
    folder: Path
    secret_values: set[str] = field(default_factory=set)
    mounted: list[Path] = field(default_factory=list)
    # A memory emptyDir is a tmpfs of its sizeLimit (mounting needs root); plain folders where that cannot be.
    memory_tmpfs: bool = True

    def lookup(self, kind: str, ref: dict, what: str) -> str | None:
        source = self.configmaps if kind == "configMap" else self.secrets
        data = source.get(ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise PodError(
                f"{what}: {kind} {ref['name']} has no key {ref['key']} (CreateContainerConfigError)"
            )
        return data[ref["key"]]

    def environment(self, container: dict) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self.configmaps.get(source["configMapRef"]["name"])
            else:
                data = self.secrets.get(source["secretRef"]["name"])
            ref = source.get("configMapRef") or source.get("secretRef")
            if data is None:
                if ref.get("optional"):
                    continue
                raise PodError(f"{container['name']}: envFrom {ref['name']} does not exist")
            env.update({prefix + key: value for key, value in data.items()})
        for var in container.get("env", []):
            name = var["name"]
            if "value" in var:
                env[name] = expand(str(var["value"]), env)
                continue
            source = var.get("valueFrom", {})
            if "secretKeyRef" in source:
                value = self.lookup("secret", source["secretKeyRef"], f"{container['name']} env {name}")
            elif "configMapKeyRef" in source:
                value = self.lookup("configMap", source["configMapKeyRef"], f"{container['name']} env {name}")
            else:
                raise PodError(
                    f"{container['name']} env {name}: valueFrom {sorted(source)} not supported here"
                )
            if value is not None:
                env[name] = value
        return env

    def volume_folder(self, volume: dict) -> tuple[Path, bool]:
        """The host folder of a pod volume (made once per pod) and whether it is read-only."""
        folder = self.folder / "volumes" / volume["name"]
        security = self.spec.get("securityContext", {})
        fs_group = security.get("fsGroup")
        if "emptyDir" in volume:
            if not folder.exists():
                folder.mkdir(parents=True)
                empty_dir = volume["emptyDir"] or {}
                if empty_dir.get("medium") == "Memory" and self.memory_tmpfs:
                    size = int(quantity(empty_dir.get("sizeLimit", "64Mi")))
                    subprocess.run(
                        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True
                    )
                    self.mounted.append(folder)
                os.chmod(folder, 0o777)  # noqa: S103 (an emptyDir is world-writable, as the kubelet makes it)
            return folder, False
        if "secret" in volume or "configMap" in volume:
            kind = "secret" if "secret" in volume else "configMap"
            source = volume[kind]
            name = source.get("secretName") if kind == "secret" else source.get("name")
            data = (self.secrets if kind == "secret" else self.configmaps).get(name)
            if data is None:
                raise PodError(
                    f"volume {volume['name']}: {kind} {name} does not exist (the pod would not start)"
                )
            if not folder.exists():
                folder.mkdir(parents=True)
                items = source.get("items") or [{"key": key, "path": key} for key in data]
                default_mode = source.get("defaultMode", 0o644)
                for item in items:
                    if item["key"] not in data:
                        raise PodError(f"volume {volume['name']}: {kind} {name} has no key {item['key']}")
                    path = folder / item["path"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(data[item["key"]])
                    os.chmod(path, item.get("mode", default_mode))
                    if (
                        fs_group is not None and os.geteuid() == 0
                    ):  # the gate runs as root; its tests need not
                        os.chown(path, 0, fs_group)
                os.chmod(folder, 0o755)  # noqa: S103 (the Secret's files keep their own mode)
            return folder, True
        raise PodError(f"volume {volume['name']}: kind {sorted(volume)} not supported here")

    def security_options(self, container: dict, name: str) -> list[str]:
        """docker run options of the pod's and the container's securityContext (the container's win)."""
        pod_security = self.spec.get("securityContext", {})
        security = {**pod_security, **container.get("securityContext", {})}
        user, group = security.get("runAsUser"), security.get("runAsGroup")
        if security.get("runAsNonRoot") and (user is None or user == 0):
            raise PodError(f"{name}: runAsNonRoot without a non-zero runAsUser (CreateContainerConfigError)")
        args: list[str] = []
        if user is not None:
            args += ["--user", f"{user}:{group if group is not None else 0}"]
        for extra in [pod_security.get("fsGroup"), *pod_security.get("supplementalGroups", [])]:
            if extra is not None:
                args += ["--group-add", str(extra)]
        if security.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        capabilities = security.get("capabilities", {})
        args += [f"--cap-drop={cap}" for cap in capabilities.get("drop", [])]
        args += [f"--cap-add={cap}" for cap in capabilities.get("add", [])]
        seccomp = security.get("seccompProfile", {}).get("type", "RuntimeDefault")
        if seccomp == "Unconfined":
            args += ["--security-opt", "seccomp=unconfined"]
        elif seccomp != "RuntimeDefault":
            raise PodError(f"{name}: seccompProfile {seccomp} not supported here")
        return args

    def docker_run(self, container: dict, name: str, *, detach: bool) -> tuple[list[str], Path]:
        """The `docker run` arguments of a container, and the env file they read (0600, removed later)."""
        args = ["docker", "run", "--name", name, "--network", "host", *(["--detach"] if detach else [])]
        args += [f"--add-host={host}:{address}" for host, address in self.hosts.items()]
        args += self.security_options(container, name)
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            args += ["--memory", str(int(quantity(limits["memory"])))]
        if "cpu" in limits:
            args += ["--cpus", f"{quantity(limits['cpu']):g}"]
        volumes = {volume["name"]: volume for volume in self.spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                raise PodError(f"{name}: volumeMount {mount['name']} names no volume of the pod")
            folder, read_only = self.volume_folder(volumes[mount["name"]])
            mode = "ro" if read_only or mount.get("readOnly") else "rw"
            args += ["--volume", f"{folder}:{mount['mountPath']}:{mode}"]
        if container.get("workingDir"):
            args += ["--workdir", container["workingDir"]]
        env = self.environment(container)
        env_file = self.folder / f"{name}.env"
        env_file.touch(mode=0o600)
        lines = []
        for key, value in env.items():
            if "\n" in value:
                raise PodError(f"{name}: env {key} holds a newline, which docker --env-file cannot carry")
            lines.append(f"{key}={value}")
        env_file.write_text("\n".join(lines) + "\n")
        args += ["--env-file", str(env_file)]
        command = [expand(part, env) for part in container.get("command", [])]
        rest = [expand(part, env) for part in container.get("args", [])]
        if command:
            args += ["--entrypoint", command[0], self.image, *command[1:], *rest]
        else:
            args += [self.image, *rest]
        return args, env_file

    def release(self) -> None:
        for folder in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(folder)], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Probes and the API, over loopback
# ---------------------------------------------------------------------------------------------------------


def container_port(container: dict, port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise PodError(f"{container['name']}: no port named {port}")


def probe_once(probe: dict, container: dict, docker_name: str) -> bool:
    """One attempt of a probe, as the kubelet makes it; True on success."""
    timeout = probe.get("timeoutSeconds", 1)
    if "httpGet" in probe:
        action = probe["httpGet"]
        port = container_port(container, action["port"])
        url = f"{action.get('scheme', 'HTTP').lower()}://127.0.0.1:{port}{action.get('path', '/')}"
        request = urllib.request.Request(url)  # noqa: S310 (http on loopback, from the manifest)
        for header in action.get("httpHeaders", []):
            request.add_header(header["name"], header["value"])
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback)
                return 200 <= response.status < 400
        except (OSError, urllib.error.URLError):
            return False
    if "tcpSocket" in probe:
        port = container_port(container, probe["tcpSocket"]["port"])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return True
        except OSError:
            return False
    if "exec" in probe:
        result = subprocess.run(
            ["docker", "exec", docker_name, *probe["exec"]["command"]], capture_output=True, check=False
        )
        return result.returncode == 0
    raise PodError(f"{container['name']}: probe {sorted(probe)} not supported here")


def running(docker_name: str) -> bool:
    state = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Running}}", docker_name],
        capture_output=True,
        text=True,
        check=False,
    )
    return state.stdout.strip() == "true"


def wait_for_probe(kind: str, probe: dict, container: dict, docker_name: str) -> float:
    """Run a probe on its period until successThreshold successes in a row; seconds it took.

    A startup probe gives up after failureThreshold failures (the kubelet would restart the container); a
    readiness probe never restarts it, so its wait is bounded by the same budget as the startup probe's.
    """
    period = probe.get("periodSeconds", 10)
    failures_allowed = probe.get("failureThreshold", 3)
    needed = probe.get("successThreshold", 1)
    started = time.monotonic()
    time.sleep(probe.get("initialDelaySeconds", 0))
    failures = successes = 0
    while True:
        if not running(docker_name):
            raise PodError(f"{kind} probe: the container exited")
        attempt = time.monotonic()
        if probe_once(probe, container, docker_name):
            successes += 1
            if successes >= needed:
                return time.monotonic() - started
        else:
            successes = 0
            failures += 1
            if failures >= failures_allowed:
                raise PodError(f"{kind} probe failed {failures} times in a row, {period}s apart")
        time.sleep(max(0.0, period - (time.monotonic() - attempt)))


def call(port: int, method: str, path: str, body: dict | None = None, token: str | None = None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            raw = response.read()
            if "json" not in response.headers.get("Content-Type", ""):
                return response.status, raw.decode(errors="replace")
            return response.status, json.loads(raw)
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw)
        except ValueError:
            return error.code, raw.decode(errors="replace")


def use_the_api(port: int) -> None:
    """A user's first session through the pod; each answer checked against the status the API documents."""
    credentials = {"username": "kubelet-user", "password": "Pod-Check-Passw0rd-" + secrets.token_hex(4)}
    steps: list[tuple[str, int, int]] = []

    def expect(label: str, status: int, answer: tuple[int, object]) -> object:
        steps.append((label, status, answer[0]))
        if answer[0] != status:
            raise PodError(f"{label} answered {answer[0]}, expected {status}: {answer[1]}")
        return answer[1]

    expect("POST /register", 201, call(port, "POST", "/register", credentials))
    tokens = expect("POST /authenticate", 200, call(port, "POST", "/authenticate", credentials))
    renewed = expect(
        "POST /token/refresh",
        200,
        call(port, "POST", "/token/refresh", {"refresh_token": tokens["refresh_token"]}),
    )
    me = expect("GET /users/me", 200, call(port, "GET", "/users/me", token=renewed["access_token"]))
    if me.get("username") != credentials["username"]:
        raise PodError(f"GET /users/me named {me.get('username')!r}")
    expect("POST /logout", 204, call(port, "POST", "/logout", token=renewed["access_token"]))
    expect(
        "POST /token/refresh after logout",
        401,
        call(port, "POST", "/token/refresh", {"refresh_token": renewed["refresh_token"]}),
    )
    expect("GET /readyz", 200, call(port, "GET", "/readyz"))
    log("API: " + ", ".join(f"{label} {status}" for label, _, status in steps))


# ---------------------------------------------------------------------------------------------------------
# The database and the Secrets of each variant
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres() -> Iterator[PostgresServer]:
    """A harness server where loopback logins need a password (scram-sha-256); its superuser keeps trust."""
    server = PostgresServer(tempfile.mkdtemp(prefix="flask-api-pod-pg-"))
    try:
        server.start()
        (server.data_dir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        yield server
    finally:
        server.destroy()


def bootstrap(server: PostgresServer, owner: str, password: str, *, superuser: bool) -> None:
    """Database flask_api owned by ``owner``: the postgres image's POSTGRES_USER or CloudNativePG's initdb."""
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
                sql.Identifier(owner),
                sql.SQL("SUPERUSER" if superuser else "NOSUPERUSER"),
                sql.Literal(password),
            )
        )
        conn.execute(sql.SQL("CREATE DATABASE flask_api OWNER {}").format(sql.Identifier(owner)))
    try:
        psycopg.connect(f"postgresql://{owner}@127.0.0.1:{server.port}/flask_api", connect_timeout=5).close()
    except psycopg.OperationalError:
        pass  # refused without its password: the Secrets' password files are what lets the pod in
    else:
        raise PodError(f"PostgreSQL let {owner} in without a password: the password files would go untested")


def base_secrets(server: PostgresServer) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The Secrets kube_config/scripts/create-secrets-k3d.sh makes, for the in-cluster PostgreSQL."""
    admin_password, app_password = secrets.token_hex(24), secrets.token_hex(24)
    bootstrap(server, "flask_api", admin_password, superuser=True)
    service = f"flask-api-postgres:{server.port}"
    return {
        "flask-api-db-admin": {
            "url": f"postgresql://flask_api@{service}/flask_api",
            "password": admin_password,
        },
        "flask-api-db": {"url": f"postgresql://flask_api_app@{service}/flask_api", "password": app_password},
        "flask-api-secrets": {"SECRET_KEY": secrets.token_hex(32)},
        # The optional Secret of a signing-key rotation: the pod runs with both keys set.
        "flask-api-secrets-previous": {"SECRET_KEY_PREVIOUS": secrets.token_hex(32)},
    }, {"flask-api-postgres": "127.0.0.1"}


def cloudnativepg_secrets(server: PostgresServer) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The Secret <cluster>-app CloudNativePG makes for bootstrap.initdb (database and owner flask_api)."""
    password = secrets.token_hex(24)
    bootstrap(server, "flask_api", password, superuser=False)
    host, port = "flask-api-pg-rw", str(server.port)
    uri = f"postgresql://flask_api:{quote(password, safe='')}@{host}.flask-api:{port}/flask_api"
    return {
        "flask-api-pg-app": {
            "username": "flask_api",
            "user": "flask_api",
            "password": password,
            "dbname": "flask_api",
            "host": host,
            "port": port,
            "uri": uri,
            "jdbc-uri": f"jdbc:postgresql://{host}.flask-api:{port}/flask_api?password={password}&user=flask_api",
            "pgpass": f"{host}:{port}:flask_api:flask_api:{password}\n",
        },
        "flask-api-secrets": {"SECRET_KEY": secrets.token_hex(32)},
    }, {host: "127.0.0.1", f"{host}.flask-api": "127.0.0.1"}


VARIANTS = {
    "base": (base_manifests, base_secrets),
    "selfhosted": (lambda: kustomized_manifests("kube_config/overlays/selfhosted"), cloudnativepg_secrets),
}


# ---------------------------------------------------------------------------------------------------------
# The kubelet's sequence
# ---------------------------------------------------------------------------------------------------------


def docker_logs(name: str) -> str:
    result = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
    return result.stdout + result.stderr


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        # As gunicorn binds: connections of an earlier pod in TIME_WAIT do not make the port busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_logs(name: str, text: str, secret_values: set[str], *, json_lines: bool) -> None:
    lines = [line for line in text.splitlines() if line.strip()] if json_lines else []
    for number, line in enumerate(lines, start=1):
        try:
            json.loads(line)
        except ValueError:
            raise PodError(f"{name}: log line {number} is not JSON: {line[:200]!r}") from None
    leaked = [value for value in secret_values if value in text]
    if leaked:
        raise PodError(f"{name}: a Secret value appears in the logs")


def first_replicas(objects: list[dict]) -> int:
    """Pods of the first rollout: the HorizontalPodAutoscaler's minReplicas (it owns the count), else 1."""
    for obj in objects:
        target = obj.get("spec", {}).get("scaleTargetRef", {})
        if obj.get("kind") == "HorizontalPodAutoscaler" and target.get("name") == DEPLOYMENT:
            return int(obj["spec"].get("minReplicas", 1))
    return 1


def run_pod(variant: str, image: str) -> None:
    manifests, make_secrets = VARIANTS[variant]
    objects = manifests()
    deployment = find(objects, "Deployment", DEPLOYMENT)
    configmaps = {
        obj["metadata"]["name"]: {key: str(value) for key, value in (obj.get("data") or {}).items()}
        for obj in objects
        if obj.get("kind") == "ConfigMap"
    }
    spec = deployment["spec"]["template"]["spec"]
    with postgres() as server:
        secret_data, hosts = make_secrets(server)
        # Long enough to be found in a log only when leaked (not "flask_api" or a port number).
        secret_values = {
            value for data in secret_data.values() for value in data.values() if len(value) >= 16
        }
        pods = [
            Pod(
                spec,
                configmaps,
                secret_data,
                hosts,
                image,
                Path(tempfile.mkdtemp(prefix=f"{POD}-{variant}-")),
            )
            for _ in range(first_replicas(objects))
        ]
        names: list[str] = []
        try:
            for pod in pods:
                pod.secret_values = secret_values
            run_containers(variant, pods, names)
        finally:
            for name in names:
                subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
            for pod in pods:
                pod.release()


def run_init_containers(variant: str, pods: list[Pod], names: list[str]) -> None:
    """Each init container of every pod of the first rollout, the pods at once, as their kubelets do."""
    for init in pods[0].spec.get("initContainers", []):
        started = time.monotonic()
        running_now = []
        for number, pod in enumerate(pods):
            name = f"{POD}-{variant}-{number}-init-{init['name']}"
            args, _ = pod.docker_run(init, name, detach=False)
            log(" ".join(args))
            names.append(name)
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            running_now.append((name, process))
        for name, process in running_now:
            out, err = process.communicate(timeout=600)
            if process.returncode != 0:
                raise PodError(
                    f"init container {init['name']} of pod {name} exited {process.returncode}: "
                    f"{(err or out).strip()[-1500:]}"
                )
            check_logs(name, docker_logs(name), pods[0].secret_values, json_lines=False)
        took = time.monotonic() - started
        log(
            f"init container {init['name']} of {len(pods)} pods at once: exit 0 in {took:.1f}s, {out.strip()}"
        )


def run_containers(variant: str, pods: list[Pod], names: list[str]) -> None:
    """The init containers of every pod, then the API container of the first pod, which is used."""
    pod = pods[0]
    containers = pod.spec["containers"]
    if len(containers) != 1:
        raise PodError(f"expected the API container alone in the pod: {[c['name'] for c in containers]}")
    container = containers[0]
    for declared in container.get("ports", []):
        if not port_free(int(declared["containerPort"])):
            raise PodError(f"port {declared['containerPort']} is taken on this host, whose network pods use")
    run_init_containers(variant, pods, names)
    # One API container only: on the host's network a second would find its ports taken.
    name = f"{POD}-{variant}-0-{container['name']}"
    args, _ = pod.docker_run(container, name, detach=True)
    log(" ".join(args))
    names.append(name)
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise PodError(f"docker run {container['name']} failed: {result.stderr.strip()}")
    try:
        drive(container, name, pod)
    except PodError:
        print(docker_logs(name)[-4000:], file=sys.stderr)
        raise


def drive(container: dict, name: str, pod: Pod) -> None:
    if "startupProbe" in container:
        took = wait_for_probe("startup", container["startupProbe"], container, name)
        log(f"startup probe passed after {took:.1f}s")
    readiness = container.get("readinessProbe")
    if readiness is None:
        raise PodError("the container has no readiness probe")
    # The kubelet would keep probing an unready pod; once started it must be ready within the failures the
    # readiness probe tolerates.
    log(f"readiness probe passed after {wait_for_probe('readiness', readiness, container, name):.1f}s")
    use_the_api(container_port(container, "http"))
    if "livenessProbe" in container and not probe_once(container["livenessProbe"], container, name):
        raise PodError("liveness probe failed after the API was used")
    for declared in container.get("ports", []):
        if declared.get("name") == "metrics":
            metrics = call(int(declared["containerPort"]), "GET", "/metrics")
            if metrics[0] != 200:
                raise PodError(f"GET /metrics on the metrics port answered {metrics[0]}")
    grace = pod.spec.get("terminationGracePeriodSeconds", 30)
    started = time.monotonic()
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        time.sleep(pre_stop["sleep"]["seconds"])
    elif "exec" in pre_stop:
        subprocess.run(["docker", "exec", name, *pre_stop["exec"]["command"]], check=False, timeout=grace)
    remaining = max(1, round(grace - (time.monotonic() - started)))
    subprocess.run(["docker", "stop", "--time", str(remaining), name], capture_output=True, check=True)
    stopped_after = time.monotonic() - started
    exit_code = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.ExitCode}}", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if exit_code != "0" or stopped_after >= grace:
        raise PodError(f"termination: exit code {exit_code} after {stopped_after:.1f}s (grace {grace}s)")
    log(f"terminated like the kubelet does (preStop, SIGTERM): exit 0 after {stopped_after:.1f}s of {grace}s")
    check_logs(name, docker_logs(name), pod.secret_values, json_lines=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="the image built from this checkout")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    options = parser.parse_args()
    failed = []
    for variant in options.variant or list(VARIANTS):
        started = time.monotonic()
        log(f"== {variant}")
        try:
            run_pod(variant, options.image)
        except PodError as exc:
            failed.append(variant)
            log(f"FAILED {variant}: {exc}")
        except Exception:  # noqa: BLE001 (a crash of this script fails the gate as loudly as a failed step)
            failed.append(variant)
            traceback.print_exc()
            log(f"FAILED {variant}: the check itself crashed (traceback above)")
        else:
            log(f"passed {variant} in {time.monotonic() - started:.0f}s")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
