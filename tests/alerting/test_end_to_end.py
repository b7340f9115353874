"""An alert leaves Prometheus and reaches a person: real gunicorn, Prometheus, Alertmanager, on loopback.

Prometheus runs the committed rules (each ``for:`` read in seconds, see stack.py) against a real
``gunicorn`` and sends to an Alertmanager running the committed routing, whose two Slack receivers post to a
local server. The API first answers 5xx (its data file's lock path is made unusable, so every registration
fails with 503 while /readyz still answers 200), then stops; each fault pages, each recovery resolves.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import yaml

from harness import wait_until
from harness.gunicorn import GunicornServer
from tests.conftest import FAST_ARGON2

from .stack import (
    ALERTMANAGER_CONFIG,
    SlackChannels,
    alertmanager,
    alertmanager_alerts,
    fast_alertmanager_config,
    minutes_as_seconds,
    prometheus,
    query,
    rule_spec,
)

# Failed registrations while the fault lasts, and good requests afterwards: at most 12 / 2400, 0.5 %, under
# both the fast (1.44 %) and the slow (0.6 %) burn thresholds once the API recovers.
FAILED_REQUESTS = 12
GOOD_REQUESTS = 2400
# Each wait is bounded; the whole test takes about a minute here (docs/runbook.md).
TIMEOUT = 90


def test_a_failing_then_stopped_api_pages_and_each_recovery_resolves(tmp_path: Path):
    secrets_dir = tmp_path / "alertmanager-receivers"
    secrets_dir.mkdir()
    env = {
        **FAST_ARGON2,
        "DATABASE_URL": None,
        "METRICS_PORT": None,
        "DATA_FILE_PATH": str(tmp_path / "data.json"),
        "SECRET_KEY": secrets.token_hex(32),
        "METRICS_ENABLED": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        # Every registration comes from 127.0.0.1: the per-address limit (429) would hide the 503s.
        "REGISTER_MAX_PER_ADDRESS": "0",
    }
    routing = fast_alertmanager_config(yaml.safe_load(ALERTMANAGER_CONFIG.read_text()), secrets_dir)
    api = GunicornServer(env, workers=2)

    slack = SlackChannels()
    # The keys of the Secret alertmanager-receivers, as docs/kubernetes.md tells an operator to create them.
    (secrets_dir / "page-slack-url").write_text(f"{slack.url}/page\n")
    (secrets_dir / "ticket-slack-url").write_text(f"{slack.url}/ticket\n")

    with (
        slack,
        api.start(timeout=60),
        alertmanager(routing, tmp_path) as am_url,
        prometheus(minutes_as_seconds(rule_spec()), f"127.0.0.1:{api.port}", am_url, tmp_path) as prom_url,
    ):
        wait_until(
            lambda: [r["value"][1] for r in query(prom_url, 'up{job="flask-api/flask-api"}')] == ["1"],
            TIMEOUT,
            interval=0.2,
            what="Prometheus to scrape the API",
        )

        # 1. Every registration fails with a 5xx: the fast burn pages; the slow burn is held back by it.
        lock = Path(env["DATA_FILE_PATH"] + ".lock")
        lock.mkdir()
        # rate() counts what a series gains after its first sample: the 503 series must exist before the rest.
        assert register(api.url, "user-0").status_code == 503
        wait_until_scraped(prom_url, "/register", "503")
        statuses = [register(api.url, f"user-{n}").status_code for n in range(1, FAILED_REQUESTS)]
        assert statuses == [503] * (FAILED_REQUESTS - 1)
        slack.wait_for("page", "[FIRING] FlaskApiAvailabilityBudgetBurnFast", TIMEOUT)
        (text,) = slack.texts("page", "[FIRING] FlaskApiAvailabilityBudgetBurnFast")
        assert "flask-api is burning its availability error budget fast." in text
        assert "Runbook: docs/runbook.md#flaskapiavailabilitybudgetburnfast" in text
        wait_until(
            lambda: (
                [
                    a["status"]["state"]
                    for a in alertmanager_alerts(am_url, "FlaskApiAvailabilityBudgetBurnSlow")
                ]
                == ["suppressed"]
            ),
            TIMEOUT,
            interval=0.2,
            what="the slow burn to be inhibited by the fast one",
        )
        assert not [t for t in slack.titles("ticket") if "BudgetBurn" in t]

        # Recovery: the lock path works again and good traffic brings the error ratios back under budget.
        lock.rmdir()
        assert register(api.url, "after-the-fault").status_code == 201
        assert hello_status(api.url) == 401
        wait_until_scraped(prom_url, "/hello", "401")
        with ThreadPoolExecutor(max_workers=8) as pool:
            good = list(pool.map(lambda _: hello_status(api.url), range(GOOD_REQUESTS)))
        assert good == [401] * GOOD_REQUESTS
        slack.wait_for("page", "[RESOLVED] FlaskApiAvailabilityBudgetBurnFast", TIMEOUT)
        wait_until(
            lambda: not query(prom_url, 'ALERTS{alertname=~"FlaskApiAvailabilityBudgetBurn.*"}'),
            TIMEOUT,
            interval=0.2,
            what="both burn alerts to end",
        )

        # 2. The API stops: nothing can be scraped, and FlaskApiDown pages (never a ticket).
        port = api.port
        api.stop()
        slack.wait_for("page", "[FIRING] FlaskApiDown", TIMEOUT)
        (text,) = slack.texts("page", "[FIRING] FlaskApiDown")
        assert "No flask-api pod can be scraped." in text
        assert "Runbook: docs/runbook.md#flaskapidown" in text

        # Recovery: the API is back on the address Prometheus scrapes.
        restarted = GunicornServer(env, workers=2)
        restarted.port, restarted.url = port, f"http://127.0.0.1:{port}"
        with restarted.start(timeout=60):
            slack.wait_for("page", "[RESOLVED] FlaskApiDown", TIMEOUT)

        assert not [t for t in slack.titles("ticket") if "FlaskApiDown" in t]


def register(url: str, username: str) -> requests.Response:
    return requests.post(
        f"{url}/register", json={"username": username, "password": "correct horse battery"}, timeout=30
    )


def wait_until_scraped(prometheus_url: str, route: str, status: str) -> None:
    selector = f'http_requests_total{{job="flask-api/flask-api", route="{route}", status="{status}"}}'
    wait_until(
        lambda: query(prometheus_url, selector), TIMEOUT, interval=0.2, what=f"{selector} to be scraped"
    )


def hello_status(url: str) -> int:
    """GET /hello without a token: a 401, which the availability SLO counts as served."""
    return requests.get(f"{url}/hello", timeout=30).status_code
