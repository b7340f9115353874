"""Load generation: bounded ``wrk`` runs on loopback, parsed into req/s and latency percentiles."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
from pathlib import Path

WRK_DIR = Path(__file__).resolve().parent / "wrk"
WRK_TIMEOUT_S = 10
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    *,
    threads: int,
    connections: int,
    duration: int,
    script: str | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """One bounded wrk run; returns req/s, p50/p99 in ms, requests and non-2xx counts."""
    command = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "--latency",
    ]
    if script:
        command += ["-s", str(WRK_DIR / script)]
    command.append(url)
    result = subprocess.run(  # noqa: S603 - wrk with fixed arguments against 127.0.0.1
        command,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        env={**os.environ, **(env or {})},
        check=True,
    )
    out = result.stdout
    percentiles = dict(re.findall(r"^\s*(50|99)(?:\.0+)?%\s+(\S+)\s*$", out, re.MULTILINE))
    if not {"50", "99"} <= percentiles.keys():
        raise RuntimeError(f"wrk printed no latency distribution for {url}:\n{out}\n{result.stderr}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": round(_ms(percentiles["50"]), 3),
        "p99_ms": round(_ms(percentiles["99"]), 3),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def summarise(runs: list[dict]) -> dict:
    """Median of the repeated runs (req/s, p50, p99), plus the raw runs."""
    return {
        "rps": round(statistics.median(run["rps"] for run in runs), 1),
        "p50_ms": round(statistics.median(run["p50_ms"] for run in runs), 3),
        "p99_ms": round(statistics.median(run["p99_ms"] for run in runs), 3),
        "non_2xx": sum(run["non_2xx"] for run in runs),
        "runs": runs,
    }


def ratio(service_runs: list[dict], reference_runs: list[dict]) -> float:
    """Median of the ratios of runs made in the same round: a drift in the machine's load cancels out."""
    pairs = zip(service_runs, reference_runs, strict=True)
    return round(statistics.median(s["rps"] / r["rps"] for s, r in pairs), 3)
