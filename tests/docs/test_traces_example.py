"""docs/serving.md#traces runs as written: ``OTEL_TRACES_ENABLED=true make run``, then its console block."""

from __future__ import annotations

import json

from harness import free_port
from harness.command import ServingCommand
from tools.docs import REPO, console_examples, run_examples

SERVING = REPO / "docs" / "serving.md"
CLEARED = dict.fromkeys(
    (
        "METRICS_PORT",
        "GUNICORN_BIND",
        "DATABASE_URL",
        "SECRET_KEY",
        "LOG_LEVEL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )
)


def test_the_traces_example_runs_as_written(tmp_path):
    examples = console_examples(SERVING.read_text(encoding="utf-8"), "## Traces")
    assert len(examples) == 1
    port = free_port()
    env = {**CLEARED, "DATA_FILE_PATH": str(tmp_path / "data.json"), "WEB_CONCURRENCY": "1"}
    env["OTEL_TRACES_ENABLED"] = "true"
    command = ["make", "--no-print-directory", "run", f"PORT={port}"]
    with ServingCommand(command, cwd=REPO, env=env) as run:
        run.wait_for(f"http://127.0.0.1:{port}/healthz")
        assert run_examples(examples, f"http://127.0.0.1:{port}") == []
        output = run.output()

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    traced = [line for line in lines if line.get("logger") == "access" and "trace_id" in line]
    assert "4bf92f3577b34da6a3ce929d0e0e4736" in {line["trace_id"] for line in traced}
