# One image for every Python part of the system (server, ingest workers, gateway, agent, CLI):
# `pip install .[agent,gateway,server]` into a virtualenv, run as an unprivileged user.
# Used by compose.yaml; see docs/DEPLOY.md. The broker runs from eclipse-mosquitto:2 and the
# database from postgres:15, not from this image.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/phd
WORKDIR /src
# Metadata first, so a source-only change reuses nothing but keeps the layer order readable.
COPY pyproject.toml README.md ./
COPY phd_protocol ./phd_protocol
COPY device_agent ./device_agent
COPY mobile_gateway ./mobile_gateway
COPY hospital_server ./hospital_server
COPY phd_cli ./phd_cli
RUN /opt/phd/bin/pip install ".[agent,gateway,server]" \
 && /opt/phd/bin/phd --help >/dev/null

FROM python:3.11-slim-bookworm
# uid/gid 10001: compose runs mosquitto with the same ids so it can read the broker key
# (0600) from the shared PKI volume without copying it.
RUN groupadd --system --gid 10001 phd \
 && useradd --system --uid 10001 --gid phd --home-dir /var/lib/phd --shell /usr/sbin/nologin phd \
 && install -d -o phd -g phd -m 0700 \
        /pki /broker /keys /var/lib/phd /var/lib/phd-gateway /var/lib/phd-agent \
 && install -d -o phd -g phd -m 0750 /run/phd
COPY --from=build /opt/phd /opt/phd
ENV PATH=/opt/phd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER phd:phd
WORKDIR /var/lib/phd
ENTRYPOINT ["phd"]
CMD ["--help"]
