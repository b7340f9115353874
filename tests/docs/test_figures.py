"""The figure blocks of the docs are what ``make docs`` writes from docs/figures/."""

from __future__ import annotations

import json

from tools.docs import FIGURES, REPO, Page, doc_pages, render_blocks, stale_blocks


def test_every_figure_block_matches_the_committed_figures():
    assert stale_blocks(doc_pages(), REPO / FIGURES) == []


def test_a_figure_typed_by_hand_fails_the_check(tmp_path):
    (tmp_path / "image.json").write_text(
        json.dumps({"date": "2026-01-02", "base_mb": 176.7, "image_mb": 200.5})
    )
    rendered = render_blocks("Sizes:\n<!-- figures:image -->\n<!-- /figures -->\n", tmp_path)
    assert "| flask-api on that base | 200.5 MB |" in rendered
    assert "| added by the image (venv with dependencies, application) | 23.8 MB |" in rendered
    page = Page(REPO / "docs" / "example.md", rendered.replace("200.5 MB", "190.0 MB"))
    assert stale_blocks([page], tmp_path) == [
        "docs/example.md: block image: differs from " + str(tmp_path) + "; run `make docs`"
    ]


def test_a_block_naming_no_figure_fails_the_check(tmp_path):
    page = Page(REPO / "docs" / "example.md", "<!-- figures:speed -->\n<!-- /figures -->\n")
    assert stale_blocks([page], tmp_path) == [
        "docs/example.md: block speed: no such figure (known: attacks, bench, bench-gthread, drills, gates, "
        "image, install, mutants, profile, schema-cost, schema-libraries, tests, tracing)"
    ]


def test_attack_figures_read_as_a_table_with_one_row_per_recorded_drill():
    from tools.docs import attacks_table

    table = attacks_table(
        {
            "date": "2026-11-30",
            "racing_guesses_json": {"concurrent_wrong_passwords": 20, "statuses": {"401": 5, "429": 15}},
            "database_recreated": {"new_user_id": 1, "old_token_hello": 401},
        }
    )

    assert table.splitlines() == [
        "`make drills` on 2026-11-30:",
        "",
        "| attack | setup | measured |",
        "| --- | --- | --- |",
        "| 20 concurrent wrong passwords, one address and username | json store | 5 x 401, 15 x 429 |",
        "| database dropped and created, then a new registration | new user id 1 | "
        "old token's `/hello`: 401 |",
    ]


def test_sign_up_burst_and_name_probing_figures_read_as_rows():
    from tools.docs import attacks_table

    table = attacks_table(
        {
            "date": "2026-12-06",
            "sign_up_burst_json": {
                "sign_ups": 200,
                "clients": 32,
                "seconds": 98.9,
                "answers_503": 25,
                "healthz": {"probes": 392, "failed": 0, "median_ms": 10.7, "p99_ms": 68.2, "max_ms": 158.9},
            },
            "register_enumeration_json": {"attempts": 53, "statuses_past_the_limit": {"429": 50}},
        }
    )

    assert table.splitlines()[4:] == [
        "| 200 sign-ups from 32 clients honouring Retry-After | json store, 1 hashing slot per worker | "
        "every one 201 in 98.9 s, after 25 x 503; `/healthz`: 0 of 392 probes failed, median 11 ms, "
        "p99 68 ms |",
        "| 53 registrations from one address, taken and free names alternating | json store | "
        "past the limit: 50 x 429 |",
    ]
