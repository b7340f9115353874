"""The benchmark's pairing: each service is compared with the Granian server on its own store."""

from __future__ import annotations

from bench import run


def wrk_run(rps: float) -> dict:
    return {"rps": rps, "p50_ms": 1.0, "p99_ms": 4.0, "requests": int(rps), "non_2xx": 0, "socket_errors": ""}


def test_each_service_is_compared_with_the_granian_server_on_its_own_store() -> None:
    runs = {
        "/hello": {
            "service@10": [wrk_run(900.0), wrk_run(1000.0)],
            "service@100000": [wrk_run(800.0), wrk_run(800.0)],
            "granian@10": [wrk_run(1000.0), wrk_run(1000.0)],
            "granian@100000": [wrk_run(400.0), wrk_run(400.0)],
            "fastapi": [wrk_run(500.0), wrk_run(500.0)],
        }
    }

    at_10 = run.summarised(runs, 10)["/hello"]["references"]
    at_100k = run.summarised(runs, 100_000)["/hello"]["references"]

    assert {name: figures["ratio_rps"] for name, figures in at_10.items()} == {
        "granian": 0.95,
        "fastapi": 1.9,
    }
    assert {name: figures["ratio_rps"] for name, figures in at_100k.items()} == {
        "granian": 2.0,
        "fastapi": 1.6,
    }
