"""The Flask class of the service: Flask, with the URL binding and matching of a request it has seen before
remembered.

Flask binds its URL map to every request (``create_url_adapter``): it checks the ``Host`` header twice, lowers
and IDNA-encodes it and decodes the path; then it matches the path against every rule (what that costs:
docs/development.md, "How to add a route"). Both outcomes depend on a few fields alone: the checks of a
``Host`` on that header, the server's name and port and the scheme; a match on the method and the path (no
rule here depends on the host). ``App`` keeps them for what it has seen (at most ``KNOWN_HOSTS`` hosts and
``KNOWN_MATCHES`` matches, so that a flood of made-up ones cannot grow the worker). A host not kept yet, a
WebSocket upgrade, and every setting that changes the binding (``SERVER_NAME``, ``TRUSTED_HOSTS``, host or
subdomain matching) go through Flask's own path, which refuses a bad host as before (400); a path that
matches no rule, or redirects, is matched afresh each time (its error names the request).
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, Request
from werkzeug.routing import MapAdapter, Rule

# Distinct (Host, server name, port, scheme) kept; past this, a new one is checked by Flask at each request.
KNOWN_HOSTS = 64
# Distinct (method, path) matches kept; past this, a new one is matched at each request.
KNOWN_MATCHES = 4096


def _decoded(value: str) -> str:
    """A WSGI string (bytes as latin-1) as the UTF-8 text it carries, as Werkzeug reads it for routing."""
    return value.encode("latin1").decode(errors="replace")


class _RememberingAdapter(MapAdapter):
    """A MapAdapter whose match of its own request (Flask's ``match(return_rule=True)``) is remembered."""

    known_matches: dict[tuple[str, str], tuple[Rule, dict[str, Any]]]
    known_matches_lock: threading.Lock

    def match(
        self,
        path_info: str | None = None,
        method: str | None = None,
        return_rule: bool = False,
        query_args: Any = None,
        websocket: bool | None = None,
    ) -> Any:
        if path_info is not None or method is not None or websocket is not None or not return_rule:
            return super().match(path_info, method, return_rule, query_args, websocket)  # type: ignore[call-overload]
        key = (self.default_method, self.path_info)
        known: Any = self.known_matches.get(key)
        if known is None:
            known = super().match(return_rule=True, query_args=query_args)  # raises: 404, 405, a redirect
            with self.known_matches_lock:
                if len(self.known_matches) < KNOWN_MATCHES:
                    self.known_matches[key] = known
        return known[0], dict(known[1])  # the arguments are the view's to change


class App(Flask):
    """Flask with the binding and the match of the requests it has seen kept (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # (HTTP_HOST, SERVER_NAME, SERVER_PORT, wsgi.url_scheme) -> (request.host, the adapter's server name)
        self._known_hosts: dict[tuple, tuple[str, str]] = {}
        self._known_lock = threading.Lock()
        self._known_matches: dict[tuple[str, str], tuple[Rule, dict[str, Any]]] = {}

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        """Flask's adapter for ``request``: for a host seen before, built without checking it again."""
        if request is None or not self._binds_by_host_alone():
            return super().create_url_adapter(request)
        environ = request.environ
        if "HTTP_UPGRADE" in environ:
            return super().create_url_adapter(request)  # a WebSocket upgrade binds to another scheme
        key = (
            environ.get("HTTP_HOST"),
            environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"),
            environ["wsgi.url_scheme"],
        )
        known = self._known_hosts.get(key)
        if known is None:
            adapter = super().create_url_adapter(request)  # raises, or records a routing error, on a bad host
            if adapter is not None and request.routing_exception is None:
                with self._known_lock:
                    if len(self._known_hosts) < KNOWN_HOSTS:
                        self._known_hosts[key] = (request.host, adapter.server_name)
            return adapter
        request.host, server_name = known
        query = environ.get("QUERY_STRING")
        adapter = _RememberingAdapter(
            self.url_map,
            server_name,
            _decoded(environ.get("SCRIPT_NAME", "/")),
            self.url_map.default_subdomain or "",
            environ["wsgi.url_scheme"],
            _decoded(environ.get("PATH_INFO", "/")),
            environ["REQUEST_METHOD"],
            None if query is None else _decoded(query),
        )
        adapter.known_matches, adapter.known_matches_lock = self._known_matches, self._known_lock
        return adapter

    def _binds_by_host_alone(self) -> bool:
        """Whether Flask would bind every request from its host and path only (this service's settings)."""
        return (
            self.config["SERVER_NAME"] is None
            and self.config["TRUSTED_HOSTS"] is None
            and not self.url_map.host_matching
            and not self.subdomain_matching
        )
