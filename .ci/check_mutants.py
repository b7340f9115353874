"""Mutation gate: every one-line bug listed in .ci/mutants.toml must make its tests fail.

Copies the tracked files of the working tree to ``--jobs`` scratch folders, checks that the listed tests
pass there unchanged (otherwise a failure proves nothing; the test files shared over the copies), then
applies each mutant (one text replacement in one file), runs its tests with ``-x`` and puts the file back;
``--jobs`` mutants at once, each in its own copy. The gate
fails when a mutant survives (its tests pass), when a mutant's original text is not found exactly once (the
list no longer matches the code: update it), or when its tests cannot even run (pytest exit code other than
1). Writes a JSON summary with the durations to ``--report`` (default: build/mutants.json).

Usage: .venv/bin/python .ci/check_mutants.py [--list .ci/mutants.toml] [--only NAME ...] [--jobs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTEST_FAILED = 1  # pytest's exit code when tests ran and some failed


def load(path: Path) -> list[dict]:
    mutants = tomllib.loads(path.read_text(encoding="utf-8"))["mutant"]
    names = [mutant["name"] for mutant in mutants]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SystemExit(f"{path}: duplicate mutant names {duplicates}")
    for mutant in mutants:
        missing = {"name", "area", "file", "original", "mutated", "tests"} - mutant.keys()
        if missing:
            raise SystemExit(f"{path}: mutant {mutant.get('name')!r} lacks {sorted(missing)}")
        if mutant["original"] == mutant["mutated"]:
            raise SystemExit(f"{path}: mutant {mutant['name']!r} changes nothing")
    return mutants


def scratch_copy(destination: Path) -> None:
    """The tracked files of the working tree (with their uncommitted changes), without .git or .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            target = destination / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def stale_mutants(scratch: Path, mutants: list[dict]) -> list[str]:
    """Mutants whose original text is not in their file exactly once: checked for all before any test runs."""
    stale = []
    for mutant in mutants:
        count = (scratch / mutant["file"]).read_text(encoding="utf-8").count(mutant["original"])
        if count != 1:
            stale.append(f"  {mutant['name']}: original text found {count} times in {mutant['file']}")
    return stale


def run_tests(scratch: Path, tests: list[str]) -> tuple[int, str]:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(command, cwd=scratch, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    return result.returncode, result.stdout[-3000:] + result.stderr[-2000:]


@contextlib.contextmanager
def borrowed(copies: queue.Queue[Path]) -> Iterator[Path]:
    """A free scratch copy for the block's duration, given back afterwards."""
    scratch = copies.get()
    try:
        yield scratch
    finally:
        copies.put(scratch)


def baseline(copies: queue.Queue[Path], tests: list[str], jobs: int) -> list[str]:
    """Run ``tests`` on the unmutated copies, split by test file into ``jobs`` shares run at once: the
    outputs of the shares that failed (none: every test passes without a mutant)."""
    files = sorted({test.split("::", 1)[0] for test in tests})
    share_of = {file: index % jobs for index, file in enumerate(files)}
    shares = [[test for test in tests if share_of[test.split("::", 1)[0]] == share] for share in range(jobs)]

    def run_share(share: list[str]) -> str:
        with borrowed(copies) as scratch:
            code, output = run_tests(scratch, share)
        return "" if code == 0 else f"(pytest exit {code})\n{output}"

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outputs = list(pool.map(run_share, [share for share in shares if share]))
    return [output for output in outputs if output]


def run_mutant(copies: queue.Queue[Path], mutant: dict) -> dict:
    """Apply ``mutant`` to a free copy, run its tests, put the file back; the outcome."""
    with borrowed(copies) as scratch:
        path = scratch / mutant["file"]
        original = path.read_text(encoding="utf-8")
        path.write_text(original.replace(mutant["original"], mutant["mutated"]), encoding="utf-8")
        started = time.monotonic()
        try:
            code, output = run_tests(scratch, mutant["tests"])
        finally:
            path.write_text(original, encoding="utf-8")
    seconds = time.monotonic() - started
    verdict = {0: "SURVIVED", PYTEST_FAILED: "killed"}.get(code, f"BROKEN (pytest exit {code})")
    report = f"{verdict:<10} {seconds:6.1f}s  {mutant['area']:<13} {mutant['name']}"
    if code != PYTEST_FAILED:
        report += "\n    " + output.strip().replace("\n", "\n    ")[-1500:]
    print(report, flush=True)
    return {"name": mutant["name"], "area": mutant["area"], "verdict": verdict, "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", type=Path, default=REPO / ".ci" / "mutants.toml")
    parser.add_argument("--only", nargs="*", default=None, help="names of the mutants to run")
    parser.add_argument("--report", type=Path, default=REPO / "build" / "mutants.json")
    parser.add_argument("--jobs", type=int, default=3, help="mutants tested at once, each in its own copy")
    parser.add_argument(
        "--check-list", action="store_true", help="only check that each original text is found exactly once"
    )
    args = parser.parse_args()

    # SIGTERM (a stopped CI job) unwinds like Ctrl-C: the scratch folder is removed, the pytest run killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    mutants = load(args.list)
    if args.only:
        unknown = set(args.only) - {mutant["name"] for mutant in mutants}
        if unknown:
            raise SystemExit(f"unknown mutants: {sorted(unknown)}")
        mutants = [mutant for mutant in mutants if mutant["name"] in args.only]
    if args.check_list:
        stale = stale_mutants(REPO, mutants)
        print(
            "\n".join(["mutants whose original text is not found exactly once:", *stale]) if stale else "ok"
        )
        return 1 if stale else 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutants-") as folder:
        scratch = Path(folder) / "copy-0"
        scratch_copy(scratch)

        stale = stale_mutants(scratch, mutants)
        if stale:
            print("mutants whose original text is not found exactly once (update .ci/mutants.toml):")
            print("\n".join(stale))
            return 1

        # Each job mutates its own copy; the tests choose free ports and temp folders, so copies do not meet.
        copies: queue.Queue[Path] = queue.Queue()
        copies.put(scratch)
        for index in range(1, args.jobs):
            copy = Path(folder) / f"copy-{index}"
            shutil.copytree(scratch, copy)
            copies.put(copy)

        baseline_tests = sorted({test for mutant in mutants for test in mutant["tests"]})
        t0 = time.monotonic()
        failures = baseline(copies, baseline_tests, args.jobs)
        baseline_seconds = time.monotonic() - t0
        print(f"baseline: {len(baseline_tests)} test targets on the unmutated code, {baseline_seconds:.0f}s")
        if failures:
            print("the tests fail without any mutant: a mutant run would prove nothing")
            print("\n".join(failures))
            return 1

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            outcomes = list(pool.map(lambda mutant: run_mutant(copies, mutant), mutants))

    total = time.monotonic() - started
    killed = sum(outcome["verdict"] == "killed" for outcome in outcomes)
    summary = {
        "date": datetime.datetime.now(tz=datetime.UTC).date().isoformat(),
        "mutants": len(outcomes),
        "killed": killed,
        "baseline_seconds": round(baseline_seconds, 1),
        "total_seconds": round(total, 1),
        "jobs": args.jobs,
        "outcomes": outcomes,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"{killed} of {len(outcomes)} mutants killed in {total:.0f}s (report: {args.report})")
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
