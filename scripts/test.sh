#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that run the real binary
# against LocalStack and local protocol servers.
#
# Starts LocalStack when nothing answers on its port (installing it once, see
# scripts/localstack.sh) and stops it again afterwards. Extra arguments go to
# `cargo test`, e.g. `scripts/test.sh --test aws`.
set -euo pipefail
cd "$(dirname "$0")/.."

started=no
cleanup() {
    if [ "$started" = yes ]; then scripts/localstack.sh stop; fi
}
trap cleanup EXIT

if ! scripts/localstack.sh status; then
    scripts/localstack.sh start
    started=yes
fi
export LOCALSTACK_ENDPOINT="http://127.0.0.1:${LOCALSTACK_PORT:-4566}"
# A Python with python-dotenv, for the env-file round trip (LocalStack's venv has one).
SECRET_SIDECAR_TEST_PYTHON="$(scripts/localstack.sh python || true)"
export SECRET_SIDECAR_TEST_PYTHON
# Azure's Python SDK, a client of the IMDS proxy's tests (installed once, cached).
SECRET_SIDECAR_TEST_AZURE_PYTHON="$(scripts/azure-sdk.sh || true)"
export SECRET_SIDECAR_TEST_AZURE_PYTHON
cargo test --locked "$@"
