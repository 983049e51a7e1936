# syntax=docker/dockerfile:1
# Two images from one file (docker-compose.yml builds both):
#   docker build --target api    -t reluswap-api .      the FastAPI service; no torch
#   docker build --target worker -t reluswap-worker .   one Celery worker per GPU; torch's CUDA build
# Both run as the same non-root uid (10001), so the storage volume they share is writable by both.

# ---- wheel: the reluswap package, built once (pure Python) --------------------------------------
FROM python:3.11.14-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY converters ./converters
COPY service ./service
COPY worker ./worker
COPY reluswap ./reluswap
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- api: service dependencies only; the package goes in with --no-deps (no torch) --------------
FROM python:3.11.14-slim-bookworm AS api
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
    && useradd --create-home --uid 10001 --user-group reluswap \
    && install -d -o reluswap -g reluswap /data /data/storage
COPY docker/api-requirements.txt /tmp/api-requirements.txt
RUN pip install --no-cache-dir -r /tmp/api-requirements.txt
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/api-requirements.txt
USER 10001:10001
WORKDIR /data
ENV RELUSWAP_DATA_DIR=/data \
    RELUSWAP_HOST=0.0.0.0 \
    RELUSWAP_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["uvicorn", "service.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]

# ---- worker: CUDA base; torch from PyPI is the CUDA build and brings its own CUDA and cuDNN -------
# The base variant (driver hooks, no CUDA libraries) is enough: the torch wheels carry the CUDA
# runtime and cuDNN as nvidia-* packages, so a cudnn-runtime base would ship them twice.
FROM nvidia/cuda:13.0.1-base-ubuntu24.04 AS worker
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# The tag pins the Ubuntu release; apt versions are not pinned because the archive drops superseded
# ones (an exact pin would break the build at the next security update). gcc, libc6-dev and
# python3-dev: Triton (the fused ConvReLU kernels, and torch.compile's CUDA kernels) compiles its
# launcher stubs against Python.h with the system C compiler the first time a kernel runs.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 --user-group reluswap \
    && install -d -o reluswap -g reluswap /data /data/storage
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /tmp/wheels
RUN wheel="$(echo /tmp/wheels/reluswap-*.whl)" \
    && pip install --no-cache-dir -c /tmp/constraints.txt "${wheel}[onnx,data]" \
    && rm -rf /tmp/wheels /tmp/constraints.txt
USER 10001:10001
WORKDIR /data
ENV RELUSWAP_DATA_DIR=/data
CMD ["reluswap", "worker"]
