"""README.md and docs/ stay true: links and anchors resolve, make targets and variables exist."""

from __future__ import annotations

from tools.docs import (
    REPO,
    Page,
    broken_links,
    doc_pages,
    pages_missing_from_index,
    unknown_make_targets,
    unknown_variables,
)


def page(text: str, name: str = "docs/example.md") -> list[Page]:
    """A page that is not on disk, as if it sat at ``name`` in the repository."""
    return [Page(REPO / name, text)]


def test_readme_is_at_most_15_kb():
    assert len((REPO / "README.md").read_bytes()) <= 15 * 1024


def test_every_page_of_docs_is_in_the_index_by_reader():
    assert pages_missing_from_index() == []


def test_a_page_left_out_of_the_index_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.md").write_text("| [a.md](a.md) | one |\n")
    (tmp_path / "docs" / "a.md").write_text("# A\n")
    (tmp_path / "docs" / "gitops.md").write_text("# GitOps\n")
    assert pages_missing_from_index(tmp_path) == ["docs/gitops.md"]


def test_every_relative_link_and_anchor_resolves():
    assert broken_links(doc_pages()) == []


def test_every_make_target_named_exists():
    assert unknown_make_targets(doc_pages()) == []


def test_every_environment_variable_named_is_read_by_the_code():
    assert unknown_variables(doc_pages()) == []


def test_a_link_to_a_missing_page_fails_the_check():
    assert broken_links(page("See [the guide](guide.md).\n")) == [
        "docs/example.md:1: link to a missing file: guide.md"
    ]


def test_a_link_to_a_missing_heading_fails_the_check():
    assert broken_links(page("See [storage](storage.md#no-such-heading).\n")) == [
        "docs/example.md:1: no heading for the anchor #no-such-heading in storage.md"
    ]


def test_an_anchor_made_from_a_heading_with_code_resolves():
    assert broken_links(page("See [the gates](development.md#what-cirun-checks).\n")) == []


def test_a_make_target_that_does_not_exist_fails_the_check():
    text = "```sh\nmake run    # make test runs the suite\nmake illustrations\n```\n"
    assert unknown_make_targets(page(text)) == [
        "docs/example.md:3: `make illustrations`: no such target in the Makefile"
    ]


def test_an_unknown_variable_fails_the_check():
    text = "Set `FLASK_API_NO_SUCH_SETTING=1`, or `WEB_CONCURRENCY`.\n"
    assert unknown_variables(page(text)) == [
        "docs/example.md:1: `FLASK_API_NO_SUCH_SETTING` is read nowhere in the code"
    ]


def test_a_shell_variable_the_page_assigns_is_not_a_setting():
    text = '```sh\nDB_HOST_NAME="$(tofu output -raw db_endpoint)"\necho "$DB_HOST_NAME"\n```\n'
    assert unknown_variables(page(text)) == []
