"""The Pythons the project is tested on: the oldest it supports and the one its image ships.

The Dockerfile's base image is the one source of truth for the shipped version; pyproject's requires-python
for the oldest. The workflow's test matrix, the classifiers and ruff's target must follow both.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PYTHON = re.compile(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)-slim@sha256:[0-9a-f]{64}$", re.MULTILINE)
CLASSIFIER = re.compile(r"^Programming Language :: Python :: (\d+\.\d+)$")


def shipped_python(dockerfile: str) -> str:
    """major.minor of the Python in the Dockerfile's base image."""
    found = IMAGE_PYTHON.findall(dockerfile)
    assert len(found) == 1, "one ARG PYTHON_IMAGE=python:X.Y-slim@sha256:... in the Dockerfile"
    return found[0]


def oldest_python(pyproject: dict) -> str:
    match = re.fullmatch(r">=(\d+\.\d+)", pyproject["project"]["requires-python"])
    assert match, "requires-python is a lower bound '>=X.Y'"
    return match.group(1)


def matrix_of(workflow_text: str) -> list[str]:
    """The Python versions of the workflow's test job."""
    workflow = yaml.safe_load(workflow_text)
    return [str(version) for version in workflow["jobs"]["test"]["strategy"]["matrix"]["python"]]


def matrix_problems(workflow_text: str, dockerfile: str, pyproject: dict) -> list[str]:
    """What the test matrix misses of the two Pythons that must be tested."""
    matrix = matrix_of(workflow_text)
    wanted = {
        "shipped by the image": shipped_python(dockerfile),
        "oldest supported": oldest_python(pyproject),
    }
    return [
        f"{what} Python {version} is not in the test matrix"
        for what, version in wanted.items()
        if version not in matrix
    ]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def ci_workflow() -> str:
    return (ROOT / ".github" / "workflows" / "ci.yml").read_text()


def test_the_image_ships_python_3_13(dockerfile):
    assert shipped_python(dockerfile) == "3.13"


def test_the_oldest_supported_python_is_3_11(pyproject):
    assert oldest_python(pyproject) == "3.11"


def test_the_workflow_tests_the_oldest_and_the_shipped_python(ci_workflow, dockerfile, pyproject):
    assert matrix_problems(ci_workflow, dockerfile, pyproject) == []
    assert matrix_of(ci_workflow) == ["3.11", "3.13"]


def test_a_matrix_without_the_shipped_python_is_caught(dockerfile, pyproject):
    workflow = "jobs:\n  test:\n    strategy:\n      matrix:\n        python: ['3.11', '3.12']\n"
    assert matrix_problems(workflow, dockerfile, pyproject) == [
        "shipped by the image Python 3.13 is not in the test matrix"
    ]


def test_an_image_on_another_python_is_caught(ci_workflow, pyproject):
    dockerfile = "ARG PYTHON_IMAGE=python:3.14-slim@sha256:" + "a" * 64 + "\n"
    assert matrix_problems(ci_workflow, dockerfile, pyproject) == [
        "shipped by the image Python 3.14 is not in the test matrix"
    ]


def test_classifiers_name_exactly_the_tested_pythons(pyproject, ci_workflow):
    classified = [m.group(1) for c in pyproject["project"]["classifiers"] if (m := CLASSIFIER.match(c))]
    assert classified == matrix_of(ci_workflow)


def test_ruff_targets_the_oldest_supported_python(pyproject):
    assert pyproject["tool"]["ruff"]["target-version"] == "py311"
