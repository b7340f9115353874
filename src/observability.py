"""Request ids, JSON access logs and Prometheus metrics (placeholder until the serving work lands)."""


def init_app(app) -> None:
    """Attach observability to the application."""
