"""The alerting stack of kube_config/monitoring, run for real on loopback: Debian's Prometheus loads the
rules of prometheusrule.yaml, Debian's Alertmanager runs alertmanager.yaml, and a local HTTP server stands in
for the Slack channels the receivers post to (the one part that cannot run here).

Only timings change, in copies: every rule's ``for:`` is read in seconds instead of minutes, rule groups are
evaluated every second, and Alertmanager's group_wait / group_interval shrink to a second. Expressions,
labels, routes, inhibitions and receivers stay as committed.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from harness import free_port, in_ci, wait_until

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "kube_config" / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
ALERTMANAGER_CONFIG = MONITORING / "alertmanager.yaml"
# Where kube-prometheus-stack mounts the Secret alertmanager-receivers (alertmanagerSpec.secrets).
RECEIVER_SECRETS = "/etc/alertmanager/secrets/alertmanager-receivers/"


def binary(name: str, package: str) -> str:
    """The path of a Debian tool; a failure under CI=true, a skip elsewhere when it is not installed."""
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} not installed (apt-get install {package}, or make check-alerts)"
    if in_ci():
        pytest.fail(f"{reason}; CI=true requires this test to run", pytrace=False)
    pytest.skip(reason)


def rule_spec(path: Path = RULES) -> dict[str, Any]:
    """The PrometheusRule's spec: a plain Prometheus rule file."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))["spec"]


def alerts(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every alerting rule of a rule file, by alert name."""
    return {rule["alert"]: rule for group in spec["groups"] for rule in group["rules"] if "alert" in rule}


def minutes_as_seconds(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of a rule file evaluated every second, each ``for: Nm`` becoming ``for: Ns``."""
    fast = copy.deepcopy(spec)
    for group in fast["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                match = re.fullmatch(r"(\d+)m", str(rule["for"]))
                assert match, f"{rule.get('alert')}: for: {rule['for']!r} is not in whole minutes"
                rule["for"] = f"{match.group(1)}s"
    return fast


def fast_alertmanager_config(config: dict[str, Any], secrets_dir: Path) -> dict[str, Any]:
    """A copy of the routing that waits a second where it waits longer, its secrets read from secrets_dir."""
    fast = copy.deepcopy(config)

    def shrink(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "1s"
        for child in route.get("routes", []):
            shrink(child)

    shrink(fast["route"])
    text = json.dumps(fast).replace(RECEIVER_SECRETS, f"{secrets_dir}/")
    return json.loads(text)


class Daemon:
    """A server process on loopback, ready once ``ready_url`` answers 200; stopped by its pid."""

    def __init__(self, command: list[str], ready_url: str, log_path: Path) -> None:
        self.command = command
        self.ready_url = ready_url
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30) -> Daemon:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

        def ready() -> bool:
            assert self.process.poll() is None, f"{self.command[0]} exited:\n{self.log()[-3000:]}"
            with contextlib.suppress(requests.RequestException):
                return requests.get(self.ready_url, timeout=2).status_code == 200
            return False

        wait_until(ready, timeout, interval=0.2, what=f"{self.command[0]} to be ready")
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def alertmanager(config: dict[str, Any], workdir: Path) -> Iterator[str]:
    """Alertmanager with ``config`` on a free loopback port, no cluster listener; yields its URL."""
    path = workdir / "alertmanager.yml"
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon = Daemon(
        [
            binary("prometheus-alertmanager", "prometheus-alertmanager"),
            f"--config.file={path}",
            f"--storage.path={workdir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # An empty address turns the gossip listener (0.0.0.0:9094 by default) off.
            "--cluster.listen-address=",
        ],
        f"{url}/-/ready",
        workdir / "alertmanager.log",
    )
    try:
        yield daemon.start().ready_url.removesuffix("/-/ready")
    finally:
        daemon.stop()


@contextlib.contextmanager
def prometheus(rules: dict[str, Any], target: str, alertmanager_url: str, workdir: Path) -> Iterator[str]:
    """Prometheus scraping ``target`` every second as the PodMonitor's job would name it; yields its URL."""
    rules_path = workdir / "flask-api.rules.yml"
    rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules_path)],
                "alerting": {
                    "alertmanagers": [
                        {"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}
                    ]
                },
                "scrape_configs": [
                    {
                        # The job and namespace labels the PodMonitor flask-api/flask-api gives in a cluster.
                        "job_name": "flask-api/flask-api",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [target], "labels": {"namespace": "flask-api"}}],
                    }
                ],
            }
        )
        + "\n"
    )
    port = free_port()
    daemon = Daemon(
        [
            binary("prometheus", "prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        f"http://127.0.0.1:{port}/-/ready",
        workdir / "prometheus.log",
    )
    try:
        yield daemon.start().ready_url.removesuffix("/-/ready")
    finally:
        daemon.stop()


class SlackChannels:
    """An HTTP server on loopback that takes Slack incoming-webhook posts; ``/<channel>`` is one channel."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        channels = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with channels._lock:
                    channels.messages.append((self.path.strip("/"), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> SlackChannels:
        self._thread.start()
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def titles(self, channel: str) -> list[str]:
        """The titles of the messages a channel received, in order."""
        with self._lock:
            return [
                attachment["title"]
                for name, message in self.messages
                if name == channel
                for attachment in message.get("attachments", [])
            ]

    def texts(self, channel: str, title: str) -> list[str]:
        with self._lock:
            return [
                attachment.get("text", "")
                for name, message in self.messages
                if name == channel
                for attachment in message.get("attachments", [])
                if attachment["title"] == title
            ]

    def wait_for(self, channel: str, title: str, timeout: float) -> float:
        """Wait until ``channel`` received a message titled ``title``; the seconds it took."""
        return wait_until(
            lambda: title in self.titles(channel), timeout, interval=0.2, what=f"{title!r} in #{channel}"
        )


def query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    response = requests.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["result"]


def alertmanager_alerts(alertmanager_url: str, alertname: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"{alertmanager_url}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'}, timeout=5
    )
    response.raise_for_status()
    return response.json()
