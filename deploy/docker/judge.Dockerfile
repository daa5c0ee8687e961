# syntax=docker/dockerfile:1
# judge: LLM rubric and reference evaluators, calibration.
# Build from the repository root:
#   docker build -f deploy/docker/judge.Dockerfile -t raftloop/judge .
# The judge's model is remote (an OpenAI-compatible endpoint), but its near-duplicate check uses
# sentence-transformers, which needs torch: the CPU wheel is installed first so that no CUDA
# build is pulled. Nothing here needs a GPU.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The repository's lockfile (`make lock`) pins every third-party package but torch, which comes
# from the chosen index (its own dependencies then settle at the lockfile's versions).
COPY constraints.txt /src/constraints.txt
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY libs/core /src/libs/core
COPY services/judge /src/services/judge
RUN pip install -c /src/constraints.txt /src/libs/core /src/services/judge

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --create-home --home-dir /home/raftloop raftloop \
    && mkdir -p /data && chown raftloop:raftloop /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    RAFTLOOP_DATA_DIR=/data
USER raftloop
WORKDIR /home/raftloop
VOLUME ["/data"]
EXPOSE 8003
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8003/healthz', timeout=4)"]
CMD ["uvicorn", "--factory", "raftloop_judge.main:build", "--host", "0.0.0.0", "--port", "8003"]
