"""The second yardstick: what a user would pick instead, FastAPI + PyJWT under uvicorn workers.

The same two routes as ``bench/reference_app.py``, written the way FastAPI's documentation writes them:
``async def`` handlers, the ``HTTPBearer`` security dependency, one ``jwt.decode`` per request, the user
looked up in an in-memory dict. Served by ``bench/run.py`` under the project's ``gunicorn.conf.py`` with
``-k uvicorn_worker.UvicornWorker`` (keep-alive, uvloop and httptools). The JWT key comes from
``BENCH_REFERENCE_JWT_SECRET``; ``application`` is built on first access, so importing needs no environment.
"""

from __future__ import annotations

import os

import jwt
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

USERS = {"1": {"id": 1, "username": "alice"}}


def create_app(jwt_secret: str) -> FastAPI:
    """Build the reference app with the given HS256 key."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    bearer = HTTPBearer()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/hello")
    async def hello(credentials: HTTPAuthorizationCredentials = Depends(bearer)):  # noqa: B008
        try:
            claims = jwt.decode(credentials.credentials, jwt_secret, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            raise HTTPException(status_code=401, detail="invalid token") from None
        user = USERS.get(claims.get("sub"))
        if user is None:
            raise HTTPException(status_code=401, detail="unknown user")
        return {"message": f"Hello {user['username'].capitalize()}"}

    return app


def token(jwt_secret: str) -> str:
    """A token this app accepts for its one user."""
    return jwt.encode({"sub": "1"}, jwt_secret, algorithm="HS256")


def __getattr__(name: str) -> FastAPI:
    if name == "application":
        app = globals()["application"] = create_app(os.environ["BENCH_REFERENCE_JWT_SECRET"])
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
