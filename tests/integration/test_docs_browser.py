"""/docs in a real headless browser (Debian's chromium) against a real gunicorn: Swagger UI renders every
operation, "try it out" of /healthz answers 200, and the page's Content-Security-Policy refuses nothing.

Marked system: it needs chromium, which ``make test-system`` installs (SYSTEM_TOOLS). It leaves its screenshot
in build/figures/api-docs.png, which ``make docs`` copies to docs/figures/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import in_ci

pytestmark = pytest.mark.system

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "build" / "figures" / "api-docs.png"
# Every operation of the API, as the page lists them.
OPERATIONS = {
    ("POST", "/register"),
    ("POST", "/authenticate"),
    ("POST", "/token/refresh"),
    ("POST", "/logout"),
    ("GET", "/id"),
    ("GET", "/hello"),
    ("GET", "/users/me"),
    ("DELETE", "/users/me"),
    ("PUT", "/users/me/password"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
}
TIMEOUT_MS = 30_000


@pytest.fixture
def browser():
    if not Path(CHROMIUM).is_file():
        message = f"{CHROMIUM} is missing: `make test-system` installs it (as root)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_docs_page_renders_every_operation_and_tries_healthz_without_csp_violation(
    browser, gunicorn_server, tmp_path
):
    server = gunicorn_server(
        {
            "DATA_FILE_PATH": str(tmp_path / "data.json"),
            "DATABASE_URL": None,
            "SECRET_KEY": None,
            "API_DOCS_ENABLED": None,
            "PROMETHEUS_MULTIPROC_DIR": None,
            "METRICS_PORT": None,
        },
        workers=2,
    )
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    # Reported by the browser for every resource or script the policy refuses, console or not.
    page.add_init_script(
        "window.__cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )

    response = page.goto(server.url + "/docs")
    assert response.status == 200
    page.wait_for_selector(".opblock", timeout=TIMEOUT_MS)
    shown = {
        (
            block.locator(".opblock-summary-method").inner_text(),
            block.locator(".opblock-summary-path").inner_text(),
        )
        for block in page.locator(".opblock").all()
    }
    assert {(method, path.replace("\u200b", "")) for method, path in shown} == OPERATIONS

    healthz = page.locator(".opblock-get", has=page.locator('.opblock-summary-path[data-path="/healthz"]'))
    healthz.locator(".opblock-summary-control").click()
    healthz.get_by_role("button", name="Try it out").click()
    healthz.get_by_role("button", name="Execute").click()
    status = healthz.locator(".live-responses-table .response .response-col_status")
    status.first.wait_for(timeout=TIMEOUT_MS)
    assert status.first.inner_text().strip() == "200"
    assert '"status": "ok"' in healthz.locator(".live-responses-table .microlight").first.inner_text()

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    assert page.evaluate("window.__cspViolations") == []
    assert [line for line in console if line.startswith(("error", "pageerror"))] == []
    assert not [line for line in console if "Content Security Policy" in line]


def test_chromium_is_a_system_tool_of_make_test_system():
    """make test-system installs what this file needs: a newcomer's `make test` never runs it."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text(encoding="utf-8")
    tools = next(line for line in makefile.splitlines() if line.startswith("SYSTEM_TOOLS :="))
    assert "chromium" in tools.split()
    assert shutil.which("chromium") == CHROMIUM
