"""Benchmark of the service against a minimal reference app (``python bench/run.py``)."""

import json
from pathlib import Path


def write_results(path: Path, results: dict, markdown: str) -> None:
    """Write a run's results to ``path`` (JSON) and its table beside it (``.md``), then print the table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown)
