# syntax=docker/dockerfile:1
# The `raftloop` command line without any service: used by the one-shot topic job
# (`raftloop broker` with KAFKA_BOOTSTRAP_SERVERS set creates every topic and starts nothing)
# and for `raftloop status` against the cluster (no torch).
# Build from the repository root:
#   docker build -f deploy/docker/cli.Dockerfile -t raftloop/cli .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The repository's lockfile (`make lock`) pins every third-party package but torch, which comes
# from the chosen index (its own dependencies then settle at the lockfile's versions).
COPY constraints.txt /src/constraints.txt
COPY libs/core /src/libs/core
COPY libs/cli /src/libs/cli
RUN pip install -c /src/constraints.txt /src/libs/core /src/libs/cli

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --create-home --home-dir /home/raftloop raftloop \
    && mkdir -p /data && chown raftloop:raftloop /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAFTLOOP_DATA_DIR=/data
USER raftloop
WORKDIR /home/raftloop
ENTRYPOINT ["raftloop"]
CMD ["status"]
