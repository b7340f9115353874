"""Fixtures of the GitOps tests: the platform's secret script run against the stand-in for kubectl."""

from __future__ import annotations

import pytest

from tests.kube.conftest import k3d_secrets, run_k3d_script, secrets_in

__all__ = ["k3d_secrets", "platform_secrets"]

PLATFORM_NAMESPACES = ("monitoring", "opensearch", "logging")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The platform's secret script hashes passwords with htpasswd (apache2-utils), a Debian tool: the tests
    that run it are marked system (`make test-system` installs it), so `make test` needs python3 only."""
    for item in items:
        if "platform_secrets" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="module")
def platform_secrets(tmp_path_factory) -> dict[tuple[str, str], dict[str, str]]:
    """(namespace, Secret) -> its data, as kube_config/scripts/create-secrets-platform.sh leaves them."""
    state = tmp_path_factory.mktemp("platform-secrets")
    result = run_k3d_script(state, "create-secrets-platform.sh")
    assert result.returncode == 0, result.stderr
    return {
        (namespace, name): data
        for namespace in PLATFORM_NAMESPACES
        for name, data in secrets_in(state, namespace).items()
    }
