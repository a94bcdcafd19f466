# One image for both Neurelay components: `neurelay gateway` (the default) and
# `neurelay operator` (the chart overrides the command).
#
#   scripts/build-image --tag REGISTRY/neurelay:0.1.0   # docker, podman or buildah
#   docker build -t REGISTRY/neurelay:0.1.0 .           # the same, by hand
#
# BASE_IMAGE is the official Python slim image; scripts/build-image swaps in an
# equivalent Debian base (Debian's python3 of the same minor version, with venv,
# made by mmdebstrap) where that image cannot be pulled. Both stages use the same
# base, so the virtualenv's interpreter link points at the same Python in both.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python3 -m venv /opt/neurelay
# The build machine's pip configuration and CA bundle arrive as build secrets,
# mounted for one step and never written to a layer; without them pip uses its
# defaults. Dependencies come first, in their own layer, so a change to the code
# alone rebuilds in seconds.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip.conf \
    --mount=type=secret,id=ca-bundle \
    python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' > requirements.txt \
    && PIP_CONFIG_FILE=/run/secrets/pip.conf \
       /opt/neurelay/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.txt
COPY README.md ./
COPY neurelay ./neurelay
# pip and setuptools leave the virtualenv: nothing in the image installs anything.
RUN --mount=type=secret,id=pip.conf \
    --mount=type=secret,id=ca-bundle \
    PIP_CONFIG_FILE=/run/secrets/pip.conf \
    /opt/neurelay/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
    && /opt/neurelay/bin/pip uninstall --yes --disable-pip-version-check pip setuptools

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 neurelay \
    && useradd --system --uid 10001 --gid neurelay --no-create-home --shell /usr/sbin/nologin neurelay
COPY --from=build /opt/neurelay /opt/neurelay
ENV PATH=/opt/neurelay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["neurelay"]
CMD ["gateway", "--config", "/etc/neurelay/gateway.yaml"]
