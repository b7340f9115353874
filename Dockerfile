ARG PYTHON_IMAGE=python:3.13-slim@sha256:8d9d0b8bcf6506481eae4907c18f5e3e7902e629f5f6d684f9e7c32e85e3ddf0

# --------------------------------------------------------------------------------------------------------
# builder: a virtualenv made from the hashed requirements, wheels only (no compiler in any stage)
# --------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
LABEL org.opencontainers.image.title="flask-api-builder"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /build
COPY requirements.txt ./
# pip and setuptools are needed to build the venv, not to run it: they leave with the builder.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: --no-deps \
        -r requirements.txt \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# --------------------------------------------------------------------------------------------------------
# runtime: the venv, the application and its gunicorn settings; numeric non-root user; read-only friendly
# --------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="flask-api" \
      org.opencontainers.image.version="1.0.0" \
      org.opencontainers.image.description="flask-api: registration, password authentication, JWT routes"

RUN groupadd --gid 10001 app \
    && useradd --no-log-init --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app \
    && mkdir /data \
    && chown 10001:10001 /data \
    && chmod 0700 /data

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY gunicorn.conf.py ./
COPY src/ ./src/
# Byte-code compiled now: the root filesystem is read-only at run time.
RUN /opt/venv/bin/python -m compileall -q /app/src

# gunicorn keeps its heartbeat files in /dev/shm and the metrics files in a fresh folder under /tmp
# (a tmpfs in Kubernetes and in `docker run --tmpfs /tmp`): nothing is written to the root filesystem.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8888 \
    DATA_FILE_PATH=/data/data.json

USER 10001:10001
VOLUME /data
EXPOSE 8888

# Python, not curl: the image carries no HTTP client. Follows GUNICORN_BIND or PORT like gunicorn.conf.py.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; b = os.environ.get('GUNICORN_BIND') or ':' + os.environ.get('PORT', '8888'); h, p = b.rsplit(':', 1); h = h if h not in ('', '0.0.0.0', '[::]') else '127.0.0.1'; urllib.request.urlopen(f'http://{h}:{p}/healthz', timeout=2)"]

# Exec form: gunicorn is PID 1 and receives SIGTERM from `docker stop` and the kubelet itself. src.serve is
# gunicorn's own command line, after a check of what gunicorn parses at import (WEB_CONCURRENCY).
ENTRYPOINT ["python", "-m", "src.serve", "-c", "/app/gunicorn.conf.py"]
CMD ["src:application"]
