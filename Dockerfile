# aiscan image. `docker build .` makes the CPU image; `docker build --build-arg VARIANT=cuda .` the GPU one.
#   cpu:  python:3.11-slim-bookworm (Debian 12, CPython 3.11), extras `cpu` (tensorflow-cpu, and openvino:
#         AISCAN_RUNTIME=auto runs models on OpenVINO there)
#   cuda: nvidia/cuda:12.3.2-runtime-ubuntu22.04 with Ubuntu's python3.11, extras `gpu`
#         (tensorflow[and-cuda], whose pip wheels bring the CUDA and cuDNN libraries TensorFlow loads;
#         the base gives the driver hooks the NVIDIA Container Toolkit expects)
# The install commands are the Makefile's $(STAMP) recipe (`make setup`) with EXTRAS cpu or gpu instead of
# cpu,optimize,dev; tests/test_deploy.py checks that they stay the same.
ARG VARIANT=cpu

FROM python:3.11-slim-bookworm AS base-cpu
ENV EXTRAS=cpu

FROM nvidia/cuda:12.3.2-runtime-ubuntu22.04 AS base-cuda
# jammy's python3.11 (universe); python3 on PATH is then 3.11, as in the cpu image.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3.11 /usr/local/bin/python3
ENV EXTRAS=gpu

FROM base-${VARIANT}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/aiscan
COPY . .
# Root owns the code and the virtual environment: the service user can run them, not change them.
RUN python3 -m venv .venv \
    && .venv/bin/python -m pip install --quiet --upgrade pip \
    && .venv/bin/python -m pip install --quiet -e ".[${EXTRAS}]"
ENV PATH=/opt/aiscan/.venv/bin:$PATH \
    AISCAN_HOME=/data/aiscan

# A fixed uid, so that bind mounts can be given to it; the home exists before VOLUME, so a new named
# volume starts owned by this user.
RUN groupadd --system --gid 10001 aiscan \
    && useradd --system --uid 10001 --gid aiscan --home-dir /data/aiscan --no-create-home aiscan \
    && mkdir -p /data/aiscan \
    && chown aiscan:aiscan /data/aiscan
USER aiscan
VOLUME ["/data/aiscan"]
ENTRYPOINT ["aiscan"]
CMD ["--help"]
