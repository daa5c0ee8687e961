# syntax=docker/dockerfile:1
# ingest: validation, PII redaction, dedup, poisoning screen, document parsing (no torch).
# Build from the repository root:
#   docker build -f deploy/docker/ingest.Dockerfile -t raftloop/ingest .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The repository's lockfile (`make lock`) pins every third-party package but torch, which comes
# from the chosen index (its own dependencies then settle at the lockfile's versions).
COPY constraints.txt /src/constraints.txt
COPY libs/core /src/libs/core
COPY services/ingest /src/services/ingest
# psycopg: the PostgreSQL driver behind DATABASE_URL=postgresql+psycopg://... (the ingest package
# itself only needs SQLAlchemy, which covers the SQLite default).
RUN pip install -c /src/constraints.txt /src/libs/core /src/services/ingest "psycopg[binary]>=3.2"

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --create-home --home-dir /home/raftloop raftloop \
    && mkdir -p /data && chown raftloop:raftloop /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAFTLOOP_DATA_DIR=/data
USER raftloop
WORKDIR /home/raftloop
VOLUME ["/data"]
EXPOSE 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=4 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/healthz', timeout=4)"]
CMD ["uvicorn", "--factory", "raftloop_ingest.main:build", "--host", "0.0.0.0", "--port", "8002"]
