# The fantasy_kg code location as a container image: a Dagster gRPC code server on port 4000.
#
#   docker build -t fantasy-kg:0.1.0 .
#   docker run -p 4000:4000 -e DAGSTER_HOME=/opt/dagster/dagster_home fantasy-kg:0.1.0
#
# The same image runs each run's pod under the K8sRunLauncher (deploy/helm/values.yaml), so it
# carries the `postgres` and `k8s` extras: a run worker loads the instance (PostgreSQL storage,
# K8sRunLauncher) before it loads our code. The package is installed the way README.md installs it
# (pip from the project folder with extras), without the dev tools and non-editable.
# docs/deploy.md says what of this was run here (docker is not available on the build machine).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Series, sections, results and the warehouse: mount a volume (or point FANTASY_KG_WAREHOUSE
    # at shared storage) so that every run pod and the code server see the same data.
    FANTASY_KG_DATA_DIR=/data

WORKDIR /opt/fantasy_kg

# Only what the package build needs (see .dockerignore): dependencies are resolved from
# pyproject.toml, and setuptools reads README.md as the long description.
COPY pyproject.toml README.md ./
COPY fantasy_kg ./fantasy_kg
RUN pip install '.[postgres,k8s]'

# Run as an unprivileged user; the data volume must be writable by it.
RUN useradd --create-home --uid 10001 fantasy \
    && mkdir -p /data /opt/dagster/dagster_home \
    && chown fantasy /data /opt/dagster/dagster_home
USER fantasy

EXPOSE 4000
# The Helm chart replaces this command with its own `dagster code-server start` arguments
# (codeServerArgs); run by hand, the image serves the same module on the same port.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "fantasy_kg.definitions"]
