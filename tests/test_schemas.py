"""src/schemas.py: one set of models validates the request bodies and gives the document its schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import FAST_ARGON2, PASSWORD, TEST_SECRET_KEY, assert_problem

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter on a copy of src/: the status of a 21-character password at /register and the
# maximum length of a password that the document's Credentials schema declares.
PROBE = """
import json, sys
from pathlib import Path
from src import create_app
from src.apidoc import build_document
config = {"DATA_FILE_PATH": sys.argv[1], "SECRET_KEY": sys.argv[2], **json.loads(sys.argv[3])}
app = create_app(config)
status = app.test_client().post("/register", json={"username": "alice", "password": "x" * 21}).status_code
schema = build_document(app)["components"]["schemas"]["Credentials"]["properties"]["password"]
print(json.dumps({"status": status, "maxLength": schema["maxLength"]}))
"""


def probe(tree: Path, data_file: Path) -> dict[str, int]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, str(data_file), TEST_SECRET_KEY, json.dumps(FAST_ARGON2)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(completed.stdout.splitlines()[-1])


def test_changing_a_models_constraint_changes_validation_and_the_document(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__"))
    assert probe(tree, tmp_path / "before.json") == {"status": 201, "maxLength": 128}

    models = tree / "src" / "schemas.py"
    source = models.read_text(encoding="utf-8")
    rule = "min_length=8, max_length=128,"
    assert source.count(rule) == 1, "the password rule is written once"
    models.write_text(source.replace(rule, "min_length=8, max_length=20,"), encoding="utf-8")

    assert probe(tree, tmp_path / "after.json") == {"status": 400, "maxLength": 20}


def test_register_ignores_fields_it_does_not_know(client):
    body = {"username": "alice", "password": PASSWORD, "admin": True, "password_hash": "x"}

    response = client.post("/register", json=body)

    assert response.status_code == 201
    assert response.get_json()["username"] == "alice"


def test_a_missing_or_mistyped_field_is_named_before_a_value_that_breaks_its_rule(client):
    response = client.post("/register", json={"username": " alice", "password": 12345678})

    assert assert_problem(response, 400)["detail"] == "password must be a string."


def test_a_form_takes_the_first_value_of_a_repeated_field(client):
    form = "username=alice&username=bob&password=correct+horse+battery"

    response = client.post("/register", data=form, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 201
    assert response.get_json()["username"] == "alice"


def test_refresh_with_a_lone_surrogate_in_the_token_returns_401(client):
    response = client.post(
        "/token/refresh", data=b'{"refresh_token": "abcdefgh\\ud800"}', content_type="application/json"
    )

    assert_problem(response, 401)


def test_delete_without_a_token_and_without_a_body_returns_401(client):
    response = client.delete("/users/me")

    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
