# Berth: ONE image for every service. The entrypoint is `berth`; the command picks the service:
#
#   docker build -t berth .
#   docker run --rm -p 5000:5000 -v berth-data:/var/lib/berth berth      # `berth run`: all in one
#   docker run --rm berth gateway | blobstore | auth | search | config check | users list ...
#
# compose/docker-compose.yml and compose/kubernetes/ run one container per service from it;
# compose/README.md explains why one image rather than one per service.
#
# Two stages: the builder installs the package and its dependencies into a virtualenv and
# generates the gRPC code; the runtime stage gets that virtualenv and nothing else (no compiler,
# no pip cache, no tests, no sources outside the installed package), and runs as a fixed non-root
# UID. Both stages use the same base image, so the virtualenv's interpreter path stays valid.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/berth/venv/bin:$PATH
RUN python -m venv /opt/berth/venv
WORKDIR /src

# Dependencies first, read from pyproject.toml alone, so this layer is rebuilt only when they
# change (binary wheels exist for all of them: no compiler needed).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --upgrade pip \
 && pip install -r /tmp/requirements.txt

COPY protos/ protos/
COPY services/ services/
# The generated gRPC code is git-ignored (and kept out of the build context): generate it exactly
# as `make proto` does, then install the package (not editable: it lands in the virtualenv, with
# its bytecode compiled, so the runtime stage needs no sources and no writable site-packages).
RUN python -m grpc_tools.protoc -Iservices/common/rpc=protos --python_out=. --grpc_python_out=. --pyi_out=. protos/*.proto \
 && pip install --no-deps . \
 && cd / \
 && python -c "import services.cli, services.common.rpc.blobstore_pb2_grpc" \
 && berth --help >/dev/null


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="Berth" \
      org.opencontainers.image.description="A container image registry: gateway, blobstore, token service and search in one image (berth gateway|blobstore|auth|search|run)"

# A fixed UID/GID, so volume ownership and Kubernetes' runAsUser/fsGroup can name it.
ARG BERTH_UID=10001
ENV PATH=/opt/berth/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DOCKER_REGISTRY_CONFIG=/etc/berth/berth.yml

# The data folders exist in the image and belong to the service user, so a named volume mounted
# on any of them starts out writable by it.
RUN groupadd --gid ${BERTH_UID} berth \
 && useradd --uid ${BERTH_UID} --gid berth --no-create-home --home-dir /var/lib/berth --shell /usr/sbin/nologin berth \
 && install -d -o berth -g berth -m 0750 /var/lib/berth /var/lib/berth/registry /var/lib/berth/auth /var/lib/berth/search

COPY --from=builder /opt/berth/venv /opt/berth/venv
# The configuration for `berth run` in one container; compose and Kubernetes mount their own file
# over it (same path), and DOCKER_REGISTRY_CONFIG / --config can point elsewhere.
COPY compose/standalone.yml /etc/berth/berth.yml

USER ${BERTH_UID}:${BERTH_UID}
WORKDIR /var/lib/berth
VOLUME ["/var/lib/berth"]
# gateway (HTTP API), blobstore (gRPC), token service, search, blobstore's probes and metrics
EXPOSE 5000 5001 5002 5003 5004

ENTRYPOINT ["berth"]
CMD ["run"]
