#!/usr/bin/env bash
# Install (once) Azure's official Python SDK into a virtualenv outside the repository and
# print its Python: the IMDS proxy's tests run it as a client nobody here wrote.
#
#   scripts/azure-sdk.sh          print the venv's python, installing it first if needed
#
# The venv lives under SECRET_SIDECAR_CACHE (default ~/.cache/secret-sidecar), beside
# LocalStack's, so a fresh clone on the same machine does not reinstall it (~30 s once).
set -euo pipefail

cache="${SECRET_SIDECAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secret-sidecar}"
venv="$cache/azure-sdk-venv"
# Pinned to what the tests were written against; azure-identity's IMDS flow goes through
# MSAL (msal >= 1.29 honours AZURE_POD_IDENTITY_AUTHORITY_HOST).
packages=('azure-identity==1.27.0' 'msal==1.39.0' 'azure-keyvault-secrets==4.12.0' 'azure-core==1.41.0')

if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import azure.identity, azure.keyvault.secrets' 2>/dev/null; then
    python="$(command -v python3)" || { echo "azure-sdk: python3 is needed" >&2; exit 1; }
    echo "azure-sdk: installing ${packages[*]} into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2
fi
echo "$venv/bin/python"
