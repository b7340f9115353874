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
        "docs/example.md: block speed: no such figure "
        "(known: bench, bench-gthread, drills, gates, image, mutants, tests)"
    ]
