#!/usr/bin/env bash
# The independent tools the admission webhook's tests check its answers with, installed
# once into a virtualenv outside the repository (SECRET_SIDECAR_CACHE, default
# ~/.cache/secret-sidecar), reused while the pins match:
#
#   jsonpatch            applies the webhook's JSON Patch (RFC 6902), not our code
#   kubernetes-validate  validates the patched pod against the Kubernetes schema (--strict)
#
#   scripts/webhook-tools.sh    install if needed, print the virtualenv's bin directory
#
# The tests run this themselves (tests/webhook.rs); concurrent runs wait for one install.
# Needs python3 >= 3.9 with venv (WEBHOOK_PYTHON to choose another).
set -euo pipefail

cache="${SECRET_SIDECAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secret-sidecar}"
venv="$cache/webhook-venv"
python="${WEBHOOK_PYTHON:-python3}"
packages=(jsonpatch==1.33 kubernetes-validate==1.37.0)
want="${packages[*]}"

mkdir -p "$cache"
exec 9>"$cache/webhook-venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$want" ]; then
    "$python" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null || {
        echo "webhook-tools: needs $python >= 3.9 with the venv module (set WEBHOOK_PYTHON)" >&2
        exit 1
    }
    echo "webhook-tools: installing ${packages[*]} into $venv (once)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2
    printf '%s' "$want" >"$venv/.pins"
fi
echo "$venv/bin"
