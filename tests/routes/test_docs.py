"""GET /docs: Swagger UI from packaged files, its own Content-Security-Policy, off with API_DOCS_ENABLED.

The page in a real browser: tests/integration/test_docs_browser.py (make test-system).
"""

from __future__ import annotations

import pytest

from src.worker import LOOP_ENDPOINTS, RoutePlacement
from tests.conftest import SECURITY_HEADERS, assert_problem

DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
STRICT_POLICY = "default-src 'none'; frame-ancestors 'none'"


def test_docs_page_is_html_that_loads_its_scripts_from_this_origin_only(client):
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == DOCS_POLICY
    page = response.get_data(as_text=True)
    assert '<script src="docs/swagger-ui-bundle.js"></script>' in page
    assert '<script src="docs/swagger-initializer.js"></script>' in page
    assert "<script>" not in page  # no inline script: the policy would refuse it
    assert "://" not in page  # nothing from a CDN


@pytest.mark.parametrize(
    ("name", "media_type", "starts_with"),
    [
        ("swagger-ui-bundle.js", "text/javascript", b""),
        ("swagger-initializer.js", "text/javascript", b"// Swagger UI's settings"),
        ("swagger-ui.css", "text/css", b""),
        ("favicon-32x32.png", "image/png", b"\x89PNG"),
    ],
)
def test_docs_assets_are_served_with_the_docs_policy(client, name, media_type, starts_with):
    response = client.get(f"/docs/{name}")

    assert response.status_code == 200
    assert response.mimetype == media_type
    assert response.data.startswith(starts_with)
    assert len(response.data) > 100
    assert response.headers["Content-Security-Policy"] == DOCS_POLICY
    assert response.headers["Cache-Control"] == "public, max-age=3600"


def test_the_swagger_ui_bundle_is_version_5_which_reads_openapi_3_1(client):
    assert b"isOAS31" in client.get("/docs/swagger-ui-bundle.js").data


@pytest.mark.parametrize("path", ["/docs/app.py", "/docs/..%2f__init__.py", "/docs/index.html", "/docs/"])
def test_other_names_under_docs_are_404_with_the_strict_policy(client, path):
    response = client.get(path)

    assert_problem(response, 404)
    assert response.headers["Content-Security-Policy"] == STRICT_POLICY


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json", "/id", "/nowhere"])
def test_every_other_route_keeps_the_strict_policy(client, path):
    response = client.get(path)

    assert response.headers["Content-Security-Policy"] == STRICT_POLICY
    assert {name: response.headers[name] for name in SECURITY_HEADERS} == SECURITY_HEADERS


def test_docs_keep_the_other_security_headers(client):
    response = client.get("/docs")

    assert {name: response.headers[name] for name in SECURITY_HEADERS} == {
        **SECURITY_HEADERS,
        "Content-Security-Policy": DOCS_POLICY,
    }


@pytest.mark.parametrize("path", ["/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-initializer.js"])
def test_api_docs_disabled_answers_404(make_app, path):
    response = make_app(API_DOCS_ENABLED="false").test_client().get(path)

    assert_problem(response, 404)
    assert response.headers["Content-Security-Policy"] == STRICT_POLICY


def test_docs_routes_run_on_the_event_loop(app):
    runs_on_pool = RoutePlacement(app.url_map, app.extensions[LOOP_ENDPOINTS])

    assert runs_on_pool("GET", "/docs") is False
    assert runs_on_pool("GET", "/docs/swagger-ui-bundle.js") is False
    assert runs_on_pool("POST", "/register") is True  # the same check sees a route on the pool
