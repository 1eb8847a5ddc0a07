#!/usr/bin/env bash
# Install (once) and run LocalStack on the host, without Docker.
#
#   scripts/localstack.sh start    install if missing, start, wait until healthy
#   scripts/localstack.sh stop     stop the instance this script started
#   scripts/localstack.sh status   exit 0 when an instance answers on the port
#   scripts/localstack.sh python   print the venv's Python (it has boto3 and python-dotenv)
#
# LocalStack's own runtime needs Python >= 3.12. The virtualenv is cached outside
# the repository (SECRET_SIDECAR_CACHE, default ~/.cache/secret-sidecar) so that a
# fresh clone on the same machine does not reinstall it. If something already
# answers on the port (for example LocalStack in Docker), `start` uses it as is.
set -euo pipefail

port="${LOCALSTACK_PORT:-4566}"
cache="${SECRET_SIDECAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secret-sidecar}"
venv="$cache/localstack-venv"
state="$cache/localstack-$port"
health="http://127.0.0.1:$port/_localstack/health"
# Pinned: newer cbor2 and pyopenssl break this LocalStack release.
packages=('localstack-core[runtime]==2026.3.0' 'cbor2<5.8' 'pyopenssl>=25,<25.2' 'cryptography>=45' service_identity boto3)

say() { printf 'localstack: %s\n' "$*" >&2; }

healthy() {
    python3 - "$health" <<'PY' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

find_python() {
    local candidate
    for candidate in "${LOCALSTACK_PYTHON:-}" python3.13 python3.12; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    # pyenv's shims refuse to run a version that is installed but not selected.
    if command -v pyenv >/dev/null 2>&1; then
        local root version
        root="$(pyenv root)"
        for version in $(ls "$root/versions" 2>/dev/null | sort -rV); do
            case "$version" in 3.1[2-9]*|3.[2-9][0-9]*) ;; *) continue ;; esac
            if "$root/versions/$version/bin/python3" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
                echo "$root/versions/$version/bin/python3"; return 0
            fi
        done
    fi
    return 1
}

install() {
    [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import localstack, boto3' 2>/dev/null && return 0
    local python
    python="$(find_python)" || {
        say "LocalStack needs Python >= 3.12; none found (set LOCALSTACK_PYTHON, or run LocalStack in Docker on port $port)"
        exit 1
    }
    say "installing LocalStack into $venv with $python (about a minute, once)"
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
}

start() {
    if healthy; then
        say "already answering on port $port"
        return 0
    fi
    install
    mkdir -p "$state"
    say "starting on 127.0.0.1:$port (log: $state/log)"
    # A stale plugin cache makes LocalStack say "No component plugins found".
    rm -rf "$HOME/.cache/plux"
    GATEWAY_LISTEN="127.0.0.1:$port" SERVICES=secretsmanager,sts,iam,ssm,kms \
        LOCALSTACK_TELEMETRY_DISABLED=1 DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
        LOCALSTACK_VOLUME_DIR="$state/volume" \
        setsid "$venv/bin/python" -m localstack.runtime.main >"$state/log" 2>&1 </dev/null &
    echo $! >"$state/pid"
    local waited=0
    until healthy; do
        if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
            say "LocalStack exited during start-up; last lines of its log:"
            tail -n 30 "$state/log" >&2
            exit 1
        fi
        sleep 0.5
        waited=$((waited + 1))
        if [ "$waited" -ge 240 ]; then
            say "not healthy after 120 s; last lines of its log:"
            tail -n 30 "$state/log" >&2
            exit 1
        fi
    done
    say "ready"
}

stop() {
    [ -f "$state/pid" ] || return 0
    local pid
    pid="$(cat "$state/pid")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$state/pid"
    say "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) healthy ;;
    install) install ;;
    python) [ -x "$venv/bin/python" ] && echo "$venv/bin/python" ;;
    *) echo "usage: $0 start|stop|status|install|python" >&2; exit 2 ;;
esac
