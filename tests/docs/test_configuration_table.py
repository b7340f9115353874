"""docs/configuration.md has one row per variable the service reads, and no other."""

from __future__ import annotations

from tools.docs import REPO, settings_in_code, settings_in_table, settings_in_template, variables_read_by_code

CONFIGURATION = REPO / "docs" / "configuration.md"


def test_every_variable_the_code_reads_is_in_the_table_and_no_other():
    assert settings_in_table(CONFIGURATION) == settings_in_code()


def test_the_code_reads_the_settings_of_the_app_and_of_gunicorn():
    code = settings_in_code()
    assert {
        "SECRET_KEY",
        "DATABASE_URL",
        "WEB_CONCURRENCY",
        "METRICS_PORT",
        "PROMETHEUS_MULTIPROC_DIR",
    } <= code
    # WSGI environ keys are not settings.
    assert "HTTP_X_REQUEST_ID" not in code


def test_env_template_offers_only_settings_the_code_reads():
    # POSTGRES_PASSWORD is compose's, marked "docker compose only" in the template.
    assert settings_in_template(REPO / ".env.template") - settings_in_code() == {"POSTGRES_PASSWORD"}


def test_a_setting_missing_from_the_table_is_found(tmp_path):
    module = tmp_path / "settings.py"
    module.write_text(
        'import os\nport = env.integer("PORT", 8888)\nnew = os.environ.get("FLASK_API_NEW_SETTING")\n'
        'folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]\n'
    )
    table = tmp_path / "configuration.md"
    table.write_text(
        "## Every setting\n\n| `PORT` | `8888` | port |\n| `OLD_SETTING` | | gone |\n\n## Next\n"
    )
    code = variables_read_by_code([module])
    assert code == {"PORT", "FLASK_API_NEW_SETTING", "PROMETHEUS_MULTIPROC_DIR"}
    assert code - settings_in_table(table) == {"FLASK_API_NEW_SETTING", "PROMETHEUS_MULTIPROC_DIR"}
    assert settings_in_table(table) - code == {"OLD_SETTING"}
