"""The docs generator and checker: ``python -m tools.docs`` (``make docs``).

``make docs`` condenses what the tools wrote (``build/junit.xml`` and ``build/coverage.json`` from
``make test``, ``build/junit-system.xml`` from ``make test-system``, ``build/mutants.json`` from
``make mutants``, ``build/gates.tsv`` from ``.ci/run``, ``build/figures/image.json`` from
``make check-image``, ``build/figures/install.json`` from ``make check-install``,
``bench/results/schema-{cost,libraries}.json`` from ``bench/schema_{cost,libraries}.py``,
``build/figures/api-docs.png`` from ``make test-system``, ``bench/results/results.md`` from
``make bench``) into ``docs/figures/``, which is committed, then rewrites every block between
``<!-- figures:NAME -->`` and ``<!-- /figures -->`` in README.md and docs/ from those files.

The checks (run by ``tests/docs/`` in ``make test``): every relative link and anchor resolves, every
``make X`` named is a Makefile target, every environment variable named is read somewhere in the
repository, the settings table of docs/configuration.md is the set of variables the code reads, the figure
blocks are what ``make docs`` writes, and the README's quick start runs as written against a real server.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = Path("docs/figures")
BUILD = Path("build")
# Test files whose cases are the reliability drills (docs/drills.md).
DRILL_FILES = ("tests/integration/test_drills_faults.py", "tests/integration/test_prometheus_scrape.py")

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
MAKE_CALL = re.compile(r"(?<![\w./-])make((?:\s+[^\s;|&#`)]+)+)")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
SHELL_ASSIGNMENT = re.compile(r"(?:^|[\s;(])(?:export\s+)?([A-Z][A-Z0-9_]*)=")
SHELL_REFERENCE = re.compile(r"\$\{?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b")
BLOCK = re.compile(r"(<!-- figures:([\w-]+) -->\n)(.*?)(<!-- /figures -->)", re.DOTALL)
# Calls that read the process environment: os.environ.get / os.getenv, and the typed readers of src/config.py
# and src/serving.py (env.text("NAME"), env.number("NAME", ...), _env.integer("NAME", ...), ...).
READER_METHODS = {"text", "number", "flag", "optional_port", "integer"}


# ---------------------------------------------------------------------------------------------------------
# Reading Markdown
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    """A Markdown file, split into prose lines and fenced code blocks (with the fence's info string)."""

    path: Path
    text: str

    def lines(self) -> Iterable[tuple[int, str, str | None]]:
        """(line number, line, info string of the enclosing code block or None for prose)."""
        info: str | None = None
        for number, line in enumerate(self.text.splitlines(), start=1):
            if FENCE.match(line):
                info = None if info is not None else line[3:].strip() or "text"
                continue
            yield number, line, info

    def code(self) -> Iterable[tuple[int, str]]:
        """Code: the lines of fenced blocks and the inline code spans of prose."""
        for number, line, info in self.lines():
            if info is not None:
                yield number, line
            else:
                for span in CODE_SPAN.findall(line):
                    yield number, span

    def anchors(self) -> set[str]:
        """GitHub's anchors for the headings of this page."""
        seen: dict[str, int] = {}
        anchors = set()
        for _number, line, info in self.lines():
            if info is None and (heading := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
                slug = slugify(heading.group(1))
                count = seen.get(slug, 0)
                seen[slug] = count + 1
                anchors.add(slug if count == 0 else f"{slug}-{count}")
        return anchors


def slugify(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def docs_folder_pages(root: Path = REPO) -> list[Path]:
    """The Markdown pages under docs/, without docs/figures/ (fragments that make docs includes)."""
    return [path for path in sorted((root / "docs").rglob("*.md")) if root / FIGURES not in path.parents]


def doc_pages(root: Path = REPO) -> list[Page]:
    """README.md and every Markdown page under docs/."""
    paths = [root / "README.md", *docs_folder_pages(root)]
    return [Page(path, path.read_text(encoding="utf-8")) for path in paths if path.is_file()]


# ---------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------
def broken_links(pages: list[Page], root: Path = REPO) -> list[str]:
    """Relative links whose file is missing or whose #anchor names no heading of that file."""
    problems = []
    anchors_of: dict[Path, set[str]] = {}
    for page in pages:
        for number, line, info in page.lines():
            if info is not None:
                continue
            for target in LINK.findall(CODE_SPAN.sub("", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                file_part, _, anchor = target.partition("#")
                path = (page.path.parent / file_part).resolve() if file_part else page.path
                where = f"{page.path.relative_to(root)}:{number}"
                if not path.exists():
                    problems.append(f"{where}: link to a missing file: {target}")
                    continue
                if anchor and path.suffix == ".md":
                    if path not in anchors_of:
                        anchors_of[path] = Page(path, path.read_text(encoding="utf-8")).anchors()
                    if anchor not in anchors_of[path]:
                        problems.append(
                            f"{where}: no heading for the anchor #{anchor} in {file_part or 'this page'}"
                        )
    return problems


def pages_missing_from_index(root: Path = REPO) -> list[str]:
    """Pages under docs/ that docs/README.md (the index by reader) does not link to."""
    index = Page(root / "docs" / "README.md", (root / "docs" / "README.md").read_text(encoding="utf-8"))
    linked = set()
    for _number, line, info in index.lines():
        if info is None:
            for target in LINK.findall(line):
                linked.add((index.path.parent / target.partition("#")[0]).resolve())
    return [
        str(path.relative_to(root))
        for path in docs_folder_pages(root)
        if path != index.path and path.resolve() not in linked
    ]


def makefile_targets(makefile: Path) -> set[str]:
    """Every target the Makefile defines (rule names, not variables or pattern rules)."""
    targets = set()
    for line in makefile.read_text(encoding="utf-8").splitlines():
        rule = re.match(r"^([A-Za-z][\w.-]*(?:[ \t]+[A-Za-z][\w.-]*)*)[ \t]*:(?![=])", line)
        if rule:
            targets.update(rule.group(1).split())
    return targets


def named_make_targets(pages: list[Page]) -> Iterable[tuple[Page, int, str]]:
    """(page, line, target) for every ``make TARGET`` in code: options and VAR=value arguments are skipped."""
    for page in pages:
        for number, code in page.code():
            # In a shell comment ("# FUZZ_MAX_EXAMPLES=500 make fuzz for a longer run") only the first word
            # after make is a target; in a command every word is.
            command, hash_sign, comment = code.partition("#")
            for text, words_allowed in ((command, None), (comment if hash_sign else "", 1)):
                for call in MAKE_CALL.finditer(text):
                    targets = 0
                    for word in call.group(1).split():
                        if word.startswith("-") or "=" in word:
                            continue
                        if not re.fullmatch(r"[a-z][a-z0-9_-]*", word) or targets == words_allowed:
                            break
                        targets += 1
                        yield page, number, word


def unknown_make_targets(pages: list[Page], root: Path = REPO) -> list[str]:
    """``make X`` in the docs where the Makefile has no target X."""
    targets = makefile_targets(root / "Makefile")
    return [
        f"{page.path.relative_to(root)}:{number}: `make {target}`: no such target in the Makefile"
        for page, number, target in named_make_targets(pages)
        if target not in targets
    ]


def repository_words(root: Path = REPO) -> set[str]:
    """Every upper-case identifier in the tracked files that are not docs or tests: what the code can read."""
    # Tracked files and new ones not ignored: git from the PATH, as a developer runs it.
    command = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(  # noqa: S603 - a fixed command
        command, cwd=root, capture_output=True, check=True, text=True
    ).stdout.split("\0")
    words: set[str] = set()
    for name in listed:
        if not name or name.endswith(".md") or name.startswith(("docs/", "tests/")):
            continue
        path = root / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        words.update(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", text))
    return words


def unknown_variables(pages: list[Page], root: Path = REPO) -> list[str]:
    """Environment variables named in the docs that nothing in the repository reads.

    A name counts as an environment variable when an inline code span is exactly ``NAME`` or ``NAME=value``,
    or a code block sets or expands it (``NAME=...``, ``$NAME``). Shell variables a page's own code blocks
    assign are that page's; every other name must occur in a tracked file outside docs/ and tests/.
    """
    known = repository_words(root)
    problems = []
    for page in pages:
        assigned = set()
        for _number, line, info in page.lines():
            if info is not None:
                assigned.update(SHELL_ASSIGNMENT.findall(line))
        for number, line, info in page.lines():
            if info is not None:
                names = set(SHELL_ASSIGNMENT.findall(line)) | set(SHELL_REFERENCE.findall(line))
                names = {name for name in names if ENV_NAME.match(name)}
            else:
                names = set()
                for span in CODE_SPAN.findall(line):
                    name = span.split("=", 1)[0].lstrip("$")
                    if ENV_NAME.match(name):
                        names.add(name)
            for name in sorted(names - known - assigned):
                problems.append(
                    f"{page.path.relative_to(root)}:{number}: `{name}` is read nowhere in the code"
                )
    return problems


def variables_read_by_code(paths: Iterable[Path]) -> set[str]:
    """Environment variables the given Python files read (see READER_METHODS), by their string literals."""
    names = set()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                if isinstance(func, ast.Attribute) and (
                    func.attr in READER_METHODS
                    or (func.attr == "get" and ast.unparse(func.value) == "os.environ")
                    or (func.attr == "getenv" and ast.unparse(func.value) == "os")
                ):
                    name = node.args[0].value
            elif (
                isinstance(node, ast.Subscript)
                and ast.unparse(node.value) == "os.environ"
                and isinstance(node.slice, ast.Constant)
            ):
                name = node.slice.value
            if isinstance(name, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                names.add(name)
    return names


def settings_in_code(root: Path = REPO) -> set[str]:
    """Every variable the service reads: the package and gunicorn.conf.py."""
    return variables_read_by_code([*sorted((root / "src").rglob("*.py")), root / "gunicorn.conf.py"])


def settings_in_table(page: Path) -> set[str]:
    """The variables of the table under "## Every setting" in docs/configuration.md."""
    text = page.read_text(encoding="utf-8")
    section = text.split("## Every setting", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, re.MULTILINE))


def settings_in_template(template: Path) -> set[str]:
    """The variables ``.env.template`` offers (``# NAME=`` lines)."""
    return set(re.findall(r"^#\s*([A-Z][A-Z0-9_]*)=", template.read_text(encoding="utf-8"), re.MULTILINE))


# ---------------------------------------------------------------------------------------------------------
# The quick start, run as written
# ---------------------------------------------------------------------------------------------------------
QUICKSTART_URL = "http://127.0.0.1:8888"
MARKER = "@@docs-check-exit"


@dataclass(frozen=True)
class Example:
    """One ``$ command`` of a console block and the output shown under it."""

    line: int
    command: str
    expected: str


def quickstart_examples(readme: str) -> list[Example]:
    """The ``$ command`` / output pairs of the console blocks in the README's "## Quick start" section."""
    return console_examples(readme, "## Quick start")


def console_examples(text: str, heading: str) -> list[Example]:
    """The ``$ command`` / output pairs of the console blocks in the section of ``text`` under ``heading``
    (up to the next second-level heading)."""
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + 1)
    offset = text.count("\n", 0, start)
    page = Page(Path("README.md"), text[start : end if end != -1 else None])
    examples: list[Example] = []
    command: list[str] = []
    output: list[str] = []
    first = 0

    def flush() -> None:
        if command:
            examples.append(Example(first, "\n".join(command), "\n".join(output)))
        command.clear()
        output.clear()

    continued = False
    for number, line, info in page.lines():
        if info != "console":
            flush()
            continued = False
            continue
        if continued:
            command.append(line)
        elif line.startswith("$ "):
            flush()
            first = offset + number
            command.append(line[2:])
        else:
            output.append(line)
        continued = line.endswith("\\") and not output
    flush()
    return examples


def run_examples(
    examples: list[Example],
    base_url: str,
    timeout: float = 120,
    *,
    source: str = "README.md",
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> list[str]:
    """Run the examples in one bash (variables carry over) against ``base_url``, in ``cwd`` with ``env``
    when given; each mismatch, once, named by ``source`` and line."""
    script = ["set -u"]
    for example in examples:
        script.append(example.command.replace(QUICKSTART_URL, base_url))
        script.append(f"printf '\\n{MARKER} %s\\n' \"$?\"")
    result = subprocess.run(  # noqa: S603
        ["bash", "-c", "\n".join(script)],  # noqa: S607
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    # stdout is: output 1, marker and status 1, output 2, marker and status 2, ...
    chunks = re.split(rf"\n{MARKER} (\d+)\n", "\n" + result.stdout)
    problems = []
    for index, example in enumerate(examples):
        where = f"{source}:{example.line}: {example.command}"
        if 2 * index + 1 >= len(chunks):
            problems.append(f"{where}\n  never ran: {result.stderr.strip()}")
            break
        got, status = chunks[2 * index].strip("\n"), chunks[2 * index + 1]
        if status != "0":
            problems.append(f"{where}\n  exit status {status}: {result.stderr.strip()}")
        elif got.rstrip() != example.expected.rstrip():
            problems.append(f"{where}\n  shown: {example.expected!r}\n  got:   {got!r}")
    return problems


# ---------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------
def tests_sentence(data: dict) -> str:
    """One sentence: the last recorded ``make test``."""
    return (
        f"`make test` on {data['date']} (Python {data['python']}): {data['passed']} passed, "
        f"{data['skipped']} skipped, {data['failed']} failed in {data['seconds']:.0f} s; "
        f"branch coverage of `src` {data['coverage_percent']:.2f} %.\n"
    )


def drills_table(data: dict) -> str:
    """A table of the drill tests of the last recorded ``make test``."""
    lines = [
        " and ".join(f"`{command}`" for command in data["drills_from"]) + f" on {data['date']}:",
        "",
        "| test | result | seconds |",
        "| --- | --- | ---: |",
    ]
    lines += [f"| `{case['name']}` | {case['outcome']} | {case['seconds']:.1f} |" for case in data["drills"]]
    return "\n".join(lines) + "\n"


def gates_table(data: dict) -> str:
    """A table of the gates of the last recorded ``.ci/run``."""
    lines = [f"`.ci/run` on {data['date']}:", "", "| gate | result | seconds |", "| --- | --- | ---: |"]
    lines += [f"| {gate['name']} | {gate['outcome']} | {gate['seconds']} |" for gate in data["gates"]]
    lines.append(f"| **whole run** | | {sum(gate['seconds'] for gate in data['gates'])} |")
    return "\n".join(lines) + "\n"


def image_table(data: dict) -> str:
    """The image size over its base, from the last recorded ``make check-image``."""
    return (
        f"| Image (`make check-image` on {data['date']}) | Size |\n| --- | ---: |\n"
        f"| base | {data['base_mb']:.1f} MB |\n| flask-api on that base | {data['image_mb']:.1f} MB |\n"
        f"| added by the image (venv with dependencies, application) | "
        f"{data['image_mb'] - data['base_mb']:.1f} MB |\n"
    )


def install_table(data: dict) -> str:
    """What a new user waits for on a fresh clone, from the last recorded ``make check-install``."""
    return (
        f"`make check-install` on {data['date']} (fresh clone, cold caches, Python {data['python']} "
        f"with its stock pip {data['pip']}, uv {data['uv']}, {data['machine']}):\n\n"
        "| command | seconds |\n| --- | ---: |\n"
        f"| `make run`: clone to the first 200 of `/healthz` | {data['make_run_seconds']:.1f} |\n"
        f"| `make test`: clone to both virtualenvs installed and ruff run (`make lint`) | "
        f"{data['make_test_install_seconds']:.1f} |\n"
    )


def _probes(figures: dict) -> str:
    return (
        f"{figures['failed']} of {figures['probes']} probes failed, median {figures['median_ms']:.0f} ms, "
        f"p99 {figures['p99_ms']:.0f} ms"
    )


def _statuses(statuses: dict) -> str:
    return ", ".join(f"{count} x {status}" for status, count in sorted(statuses.items()))


def _serving_rows(data: dict) -> list[str]:
    rows = []
    for key, label in (("login_flood_before", "login flood, before"), ("login_flood", "login flood")):
        if key in data:
            run = data[key]
            rows.append(
                f"| {label}: 16 clients, failed logins from new addresses, 20 s | {run['gunicorn']} | "
                f"`/healthz`: {_probes(run['healthz'])}; `/hello` with a valid token: "
                f"{run['hello_ok_percent']:.1f} % of {run['hello_requests']} succeeded; password checks "
                f"{run['password_checks_per_second']}/s; answers {_statuses(run['flood_statuses'])} |"
            )
    for key, label in (
        ("slow_clients_before_sync", "slow clients, before"),
        ("slow_clients_before_gthread", "slow clients, before"),
        ("slow_clients_no_proxy", "slow clients"),
        ("slow_clients", "slow clients"),
    ):
        if key in data:
            run = data[key]
            probes = "; ".join(
                f"`/healthz` {name.removeprefix('healthz_').replace('_', ' ')}: {_probes(run[name])}"
                for name in ("healthz_app_port", "healthz_proxy")
                if name in run
            )
            rows.append(f"| {label}: {run['attack']} | {run['path']} | {probes} |")
    if "silent_connections" in data:
        run = data["silent_connections"]
        rows.append(
            f"| silent connections: {run['attack']} | {run['path']} | {run['opened']:,} opened in "
            f"{run['opening_seconds']} s, the longest lived {run['longest_lifetime_s']} s, "
            f"{run['still_open']} left open; at most {run['most_held_by_a_worker']} held by a worker; "
            f"`/healthz`: {_probes(run['healthz_app_port'])} |"
        )
    return rows


def _limit_rows(data: dict) -> list[str]:
    rows = []
    for store in ("json", "postgresql"):
        if f"racing_guesses_{store}" in data:
            rows.append(
                f"| 20 concurrent wrong passwords, one address and username | {store} store | "
                f"{_statuses(data[f'racing_guesses_{store}']['statuses'])} |"
            )
        if f"distributed_guesses_{store}" in data:
            run = data[f"distributed_guesses_{store}"]
            rows.append(
                f"| {run['guesses']} | {store} store | {_statuses(run['statuses'])}; the owner from a fresh "
                f"address: {run['owner_from_a_fresh_address']} |"
            )
        if f"registrations_per_address_{store}" in data:
            statuses = data[f"registrations_per_address_{store}"]["statuses"]
            counts = {str(status): statuses.count(status) for status in set(statuses)}
            rows.append(
                f"| {len(statuses)} registrations from one address | {store} store | {_statuses(counts)} |"
            )
        if f"sign_up_burst_{store}" in data:
            run = data[f"sign_up_burst_{store}"]
            rows.append(
                f"| {run['sign_ups']} sign-ups from {run['clients']} clients honouring Retry-After | {store} "
                f"store, 1 hashing slot per worker | every one 201 in {run['seconds']} s, after "
                f"{run['answers_503']} x 503; `/healthz`: {_probes(run['healthz'])} |"
            )
        if f"register_enumeration_{store}" in data:
            run = data[f"register_enumeration_{store}"]
            rows.append(
                f"| {run['attempts']} registrations from one address, taken and free names alternating | "
                f"{store} store | past the limit: {_statuses(run['statuses_past_the_limit'])} |"
            )
    return rows


def _store_rows(data: dict) -> list[str]:
    rows = []
    if "bad_input" in data:
        run = data["bad_input"]
        rows.append(
            f"| bad bodies: {'; '.join(run.get('cases', []))}; a chunked body twice the limit | gunicorn, "
            f"and through nginx | every one a 4xx problem+json; chunked over the limit: "
            f"{run.get('chunked_over_limit_app')} (app), {run.get('chunked_over_limit_proxy')} (nginx) |"
        )
    if "data_file_truncated" in data:
        run = data["data_file_truncated"]
        rows.append(
            f"| data file emptied (`: > data.json`) | JSON store | `/hello` with an old token "
            f"{run['hello']}, `/register` {run['register']}, the file left as it was |"
        )
    for key, label in (
        ("data_file_recreated", "JSON file deleted"),
        ("database_recreated", "database dropped and created"),
    ):
        if key in data:
            run = data[key]
            rows.append(
                f"| {label}, then a new registration | new user id {run['new_user_id']} | "
                f"old token's `/hello`: {run['old_token_hello']} |"
            )
    if "password_changes_at_scale" in data:
        run = data["password_changes_at_scale"]
        rows.append(
            f"| {run['users']:,} users ({run['data_file_mb']} MB file), one changing its password every 2 s, "
            f"{run['password_changes']} changes | JSON store, 4 event-loop workers | `/healthz`: "
            f"{_probes(run['healthz'])}; `/hello` with a valid token: {run['hello_failed']} of "
            f"{run['hello_requests']} failed, p99 {run['hello_p99_ms']:.0f} ms |"
        )
    if "metric_files" in data:
        run = data["metric_files"]
        rows.append(
            f"| {run['worker_restarts']} worker restarts ({run['restart_seconds']} s) | metric files "
            f"folded | scrape {run['scrape_ms_fresh']} ms fresh, {run['scrape_ms_after_restarts']} ms "
            f"after (master CPU per scrape {run.get('scrape_cpu_ms_fresh')} -> "
            f"{run.get('scrape_cpu_ms_after_restarts')} ms); {run['files_after_restarts']} files left |"
        )
    return rows


def attacks_table(data: dict) -> str:
    """The attack drills of the last ``make drills`` (the before rows: ``DRILLS_BEFORE=1 make drills``)."""
    header = [
        f"`make drills` on {data.get('date', '?')}:",
        "",
        "| attack | setup | measured |",
        "| --- | --- | --- |",
    ]
    return "\n".join(header + _serving_rows(data) + _limit_rows(data) + _store_rows(data)) + "\n"


def mutants_table(data: dict) -> str:
    """The last recorded ``make mutants``: each one-line bug and whether its tests caught it."""
    lines = [
        f"`make mutants` on {data['date']}: {data['killed']} of {data['mutants']} mutants killed in "
        f"{data['total_seconds']:.0f} s, {data['jobs']} at a time (of which {data['baseline_seconds']:.0f} s "
        "for the baseline run of their tests on the unmutated code).",
        "",
        "| mutant | area | result | seconds |",
        "| --- | --- | --- | ---: |",
    ]
    lines += [
        f"| `{outcome['name']}` | {outcome['area']} | {outcome['verdict']} | {outcome['seconds']:.1f} |"
        for outcome in data["outcomes"]
    ]
    return "\n".join(lines) + "\n"


def schema_cost_table(data: dict) -> str:
    """bench/schema_cost.py's medians: the hand-written checks against the pydantic models."""
    load = ", ".join(f"{value:.2f}" for value in data["load_average"])
    lines = [
        f"Measured {data['date']} with Python {data['python']}: {data['rounds']} rounds, each tree in a "
        f"fresh interpreter, alternating; load average {load}. CPU µs per call, median of the rounds.",
        "",
        f"| what | hand-written checks ({data['baseline']}) | pydantic models | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    medians = data["cpu_us_per_call"]
    for name, ratio in data["ratio_models_to_baseline"].items():
        lines.append(
            f"| {name} | {medians['baseline'][name]:.1f} | {medians['models'][name]:.1f} | {ratio:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def schema_libraries_table(data: dict) -> str:
    """bench/schema_libraries.py's medians: each library against Flask with the project's own decorator."""
    load = ", ".join(f"{value:.2f}" for value in data["load_average"])
    versions = ", ".join(f"{name} {number}" for name, number in data["versions"].items())
    medians = data["cpu_us_per_request"]
    base = medians["flask + own decorator"]
    routes = list(base)
    lines = [
        f"Measured {data['date']} with Python {data['python']} ({versions}): {data['rounds']} rounds, the "
        f"apps alternating; load average {load}. CPU µs per request, median of the rounds (ratio to the "
        "first row).",
        "",
        "| app | " + " | ".join(routes) + " |",
        "| --- |" + " ---: |" * len(routes),
    ]
    for name, figures in medians.items():
        cells = [f"{figures[route]:.1f} ({figures[route] / base[route]:.2f}x)" for route in routes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# NAME of a block: (file in docs/figures/, the command that records it, how it reads in the docs).
# A .md file is included as it is (the benchmark writes its own tables).
FIGURES_OF: dict[str, tuple[str, str, Callable[[dict], str] | None]] = {
    "tests": ("tests.json", "make test", tests_sentence),
    "drills": ("tests.json", "make test", drills_table),
    "gates": ("gates.json", "make ci", gates_table),
    "image": ("image.json", "make check-image", image_table),
    "install": ("install.json", "make check-install", install_table),
    "mutants": ("mutants.json", "make mutants", mutants_table),
    "bench": ("bench.md", "make bench", None),
    "bench-gthread": (
        "bench-gthread.md",
        "python bench/run.py --worker-class gthread --output bench/results/gthread.json",
        None,
    ),
    "profile": ("profile.md", "python bench/profile.py", None),
    "tracing": ("tracing.md", "python bench/tracing.py", None),
    "attacks": ("attacks.json", "make drills", attacks_table),
    "schema-libraries": (
        "schema-libraries.json",
        ".venv-schema-libs/bin/python bench/schema_libraries.py",
        schema_libraries_table,
    ),
    "schema-cost": (
        "schema-cost.json",
        "python bench/schema_cost.py --baseline 5a6da25",
        schema_cost_table,
    ),
}


def render_figure(name: str, figures: Path) -> str:
    """The text of the block ``name`` from the files in ``figures``."""
    file_name, command, render = FIGURES_OF[name]
    path = figures / file_name
    if not path.is_file():
        return f"No recorded run yet: run `{command}`, then `make docs` ({name}).\n"
    text = path.read_text(encoding="utf-8")
    return render(json.loads(text)) if render else text


def render_blocks(text: str, figures: Path) -> str:
    """``text`` with every figure block rewritten from ``figures``; an unknown NAME raises KeyError."""

    def block(match: re.Match[str]) -> str:
        return match.group(1) + render_figure(match.group(2), figures) + match.group(4)

    return BLOCK.sub(block, text)


def stale_blocks(pages: list[Page], figures: Path, root: Path = REPO) -> list[str]:
    """Figure blocks whose content differs from what ``make docs`` writes, or that name no renderer."""
    problems = []
    for page in pages:
        for match in BLOCK.finditer(page.text):
            name = match.group(2)
            where = f"{page.path.relative_to(root)}: block {name}"
            if name not in FIGURES_OF:
                problems.append(f"{where}: no such figure (known: {', '.join(sorted(FIGURES_OF))})")
            elif match.group(3) != render_figure(name, figures):
                problems.append(f"{where}: differs from {figures}; run `make docs`")
    return problems


def junit_cases(junit: Path) -> tuple[ET.Element, list[dict]]:
    """The test suite element of a junit file and its cases (file, name, outcome, seconds)."""
    suite = ET.parse(junit).getroot()  # noqa: S314 - a file pytest wrote
    if suite.tag == "testsuites":
        suite = suite[0]
    cases = []
    for case in suite.iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        # classname is the test module ("tests.integration.test_drills_faults"), plus the class if any.
        classname = case.get("classname", "")
        path = next((f for f in DRILL_FILES if f"{classname}.".startswith(_module(f) + ".")), classname)
        cases.append(
            {
                "file": path,
                "name": case.get("name", ""),
                "outcome": outcome,
                "seconds": float(case.get("time", 0)),
            }
        )
    return suite, cases


def collect_tests(junit: Path, coverage: Path, system_junit: Path | None = None) -> dict:
    """The summary of a junit file and a coverage JSON report; drills also from ``make test-system``'s."""
    suite, cases = junit_cases(junit)
    drill_cases = [case for case in cases if case["file"] in DRILL_FILES]
    drills_from = ["make test"]
    if system_junit is not None and system_junit.is_file():
        drill_cases += [case for case in junit_cases(system_junit)[1] if case["file"] in DRILL_FILES]
        drills_from.append("make test-system")
    totals = json.loads(coverage.read_text(encoding="utf-8"))["totals"]
    return {
        "date": suite.get("timestamp", "")[:10],
        "python": ".".join(map(str, sys.version_info[:2])),
        "passed": sum(case["outcome"] == "passed" for case in cases),
        "skipped": sum(case["outcome"] == "skipped" for case in cases),
        "failed": sum(case["outcome"] == "failed" for case in cases),
        "seconds": round(float(suite.get("time", 0)), 1),
        "coverage_percent": round(totals["percent_covered"], 2),
        "drills_from": drills_from,
        "drills": [
            {"name": case["name"], "outcome": case["outcome"], "seconds": round(case["seconds"], 1)}
            for case in drill_cases
        ],
    }


def _module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def collect_gates(tsv: Path, date: str) -> dict:
    """The gates ``.ci/run`` recorded, one ``name<TAB>outcome<TAB>seconds`` line each."""
    gates = []
    for line in tsv.read_text(encoding="utf-8").splitlines():
        name, outcome, seconds = line.split("\t")
        gates.append({"name": name, "outcome": outcome, "seconds": int(seconds)})
    return {"date": date, "gates": gates}


def collect(root: Path = REPO) -> list[str]:
    """Copy what the tools wrote into docs/figures/; the names of the figures updated."""
    figures, build = root / FIGURES, root / BUILD
    figures.mkdir(parents=True, exist_ok=True)
    updated = []

    def write(name: str, content: str) -> None:
        (figures / name).write_text(content, encoding="utf-8")
        updated.append(name)

    if (build / "junit.xml").is_file() and (build / "coverage.json").is_file():
        write(
            "tests.json",
            json.dumps(
                collect_tests(build / "junit.xml", build / "coverage.json", build / "junit-system.xml"),
                indent=2,
            )
            + "\n",
        )
    if (build / "gates.tsv").is_file():
        date = _file_date(build / "gates.tsv")
        write("gates.json", json.dumps(collect_gates(build / "gates.tsv", date), indent=2) + "\n")
    if (build / "mutants.json").is_file():
        write("mutants.json", (build / "mutants.json").read_text(encoding="utf-8"))
    for name in ("image.json", "install.json"):
        if (build / "figures" / name).is_file():
            write(name, (build / "figures" / name).read_text(encoding="utf-8"))
    if (build / "figures" / "api-docs.png").is_file():  # tests/integration/test_docs_browser.py
        (figures / "api-docs.png").write_bytes((build / "figures" / "api-docs.png").read_bytes())
        updated.append("api-docs.png")
    # The tables, and every round behind them.
    for source, target in (
        ("results.md", "bench.md"),
        ("results.json", "bench.json"),
        ("gthread.md", "bench-gthread.md"),
        ("gthread.json", "bench-gthread.json"),
        ("profile.md", "profile.md"),
        ("profile.json", "profile.json"),
        ("tracing.md", "tracing.md"),
        ("tracing.json", "tracing.json"),
        ("schema-cost.json", "schema-cost.json"),
        ("schema-libraries.json", "schema-libraries.json"),
    ):
        if (root / "bench" / "results" / source).is_file():
            write(target, (root / "bench" / "results" / source).read_text(encoding="utf-8"))
    if (build / "figures" / "attacks.json").is_file():
        # Merged: a plain `make drills` records the after figures, and keeps the before ones recorded with
        # DRILLS_BEFORE=1.
        kept = figures / "attacks.json"
        previous = json.loads(kept.read_text(encoding="utf-8")) if kept.is_file() else {}
        latest = json.loads((build / "figures" / "attacks.json").read_text(encoding="utf-8"))
        write("attacks.json", json.dumps({**previous, **latest}, indent=2, sort_keys=True) + "\n")
    return updated


def _file_date(path: Path) -> str:
    import datetime  # noqa: PLC0415

    return datetime.datetime.fromtimestamp(path.stat().st_mtime, tz=datetime.UTC).date().isoformat()


def render(root: Path = REPO) -> list[str]:
    """Rewrite the figure blocks of every page from docs/figures/; the pages changed."""
    changed = []
    for page in doc_pages(root):
        text = render_blocks(page.text, root / FIGURES)
        if text != page.text:
            page.path.write_text(text, encoding="utf-8")
            changed.append(str(page.path.relative_to(root)))
    return changed


def main() -> int:
    """``make docs``: collect the figures the tools wrote, rewrite the blocks, print what changed."""
    for name in collect():
        print(f"docs: figures {FIGURES / name} updated")
    for name in render():
        print(f"docs: {name} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
