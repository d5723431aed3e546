# syntax=docker/dockerfile:1
# isnetflow runtime image: every kfp component runs in it (install_kfp_package=False).
# CUDA-capable: the pinned torch==2.14.1 wheel from PyPI bundles the CUDA runtime, cuDNN and NCCL
# (nvidia-* wheels), so a slim Python base is enough; the host provides only the NVIDIA driver
# (via the NVIDIA container toolkit / GPU operator). Versions come from constraints.txt, the lock.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --upgrade "pip>=24" setuptools wheel \
 && pip install -c constraints.txt . \
 && pip check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="isnetflow" \
      org.opencontainers.image.description="ISNet chest X-ray training pipeline (kfp v2 + MLflow)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/isnetflow
RUN groupadd --system --gid 10001 isnetflow \
 && useradd --system --uid 10001 --gid isnetflow --create-home --home-dir /home/isnetflow isnetflow
COPY --from=build /opt/venv /opt/venv
COPY --chown=isnetflow:isnetflow components /app/components
COPY --chown=isnetflow:isnetflow pipelines /app/pipelines
WORKDIR /app
USER 10001:10001
HEALTHCHECK NONE
ENTRYPOINT ["isnetflow"]
CMD ["--help"]
