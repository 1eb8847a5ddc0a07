#!/usr/bin/env bash
# Supply-chain checks: known advisories, licenses, banned or duplicate crates and
# sources, with cargo-deny and the policy in deny.toml. Runs offline.
#
# There is no network access to GitHub here, so the RustSec advisory data comes from a
# read-only snapshot: SECRET_SIDECAR_ADVISORY_SNAPSHOT, else ../shared/advisory-db next
# to the repository, else /work/shared/advisory-db (where this project's machines keep it). cargo-deny only reads a database that is a git repository
# named after its URL, so this script copies the snapshot into
#   ~/.cache/secret-sidecar/advisory-dbs/advisory-db-3157b0e258782691
# (the fixed per-user db-path in deny.toml), commits it, and reuses it until the
# snapshot changes.
#
# cargo-deny's own "database is stale" check would only measure the age of that local
# copy, so this script warns about the age of the snapshot's data instead.
set -euo pipefail
cd "$(dirname "$0")/.."

# The newest cargo-deny at the time of writing; it needs Rust 1.88.
cargo_deny_version=0.20.2
# cargo-deny names the directory after a hash of the database URL in deny.toml.
db_dir_name=advisory-db-3157b0e258782691
max_age_days=90

if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "== installing cargo-deny $cargo_deny_version (a few minutes, once)"
    cargo install --locked cargo-deny --version "$cargo_deny_version"
fi
echo "== $(cargo deny --version)"

if [ -n "${SECRET_SIDECAR_ADVISORY_SNAPSHOT:-}" ]; then
    candidates=("$SECRET_SIDECAR_ADVISORY_SNAPSHOT")
else
    candidates=(../shared/advisory-db /work/shared/advisory-db)
fi
snapshot=
for candidate in "${candidates[@]}"; do
    if [ -d "$candidate/crates" ]; then
        snapshot="$(cd "$candidate" && pwd)"
        break
    fi
done
if [ -z "$snapshot" ]; then
    echo "error: no RustSec advisory snapshot found; set SECRET_SIDECAR_ADVISORY_SNAPSHOT" >&2
    echo "       to a copy of github.com/rustsec/advisory-db (its crates/ and rust/ folders)" >&2
    exit 2
fi

# Must match db-path in deny.toml.
db_root="$HOME/.cache/secret-sidecar/advisory-dbs"
db="$db_root/$db_dir_name"
mkdir -p "$db_root"

# The snapshot's identity: every file's path and content.
fingerprint="$(cd "$snapshot" && find . -type f -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"

# The date of the upstream commit the snapshot was taken from, if SOURCE.txt says.
snapshot_date="$(sed -n 's/^commit date: *\([^ ]*\).*/\1/p' "$snapshot/SOURCE.txt" 2>/dev/null || true)"

prepare_db() {
    local staging
    staging="$(mktemp -d "$db_root/.staging.XXXXXX")"
    cp -R "$snapshot/." "$staging/"
    (
        cd "$staging"
        git init -q
        git add -A
        # Dated like the snapshot, so `git log` in the cache tells how old the data is.
        GIT_AUTHOR_DATE="${snapshot_date:-now}" GIT_COMMITTER_DATE="${snapshot_date:-now}" \
            git -c user.name=secret-sidecar -c user.email=secret-sidecar@localhost \
            -c commit.gpgsign=false commit -q --no-verify -m "RustSec advisory-db snapshot $fingerprint"
    )
    echo "$fingerprint" >"$staging/.git/secret-sidecar-fingerprint"
    rm -rf "$db"
    mv "$staging" "$db"
}

# One preparer at a time; a concurrent run waits and then finds the database ready.
exec 9>"$db_root/.prepare.lock"
flock 9
# Rebuilt when the snapshot changes, and once a month so that cargo-deny's own
# staleness check (which looks at the local copy's age) never trips on an unchanged one.
if [ "$(cat "$db/.git/secret-sidecar-fingerprint" 2>/dev/null)" = "$fingerprint" ] \
    && [ -z "$(find "$db/.git/HEAD" -mtime +30 2>/dev/null)" ]; then
    echo "== advisory database: reusing $db"
else
    echo "== advisory database: preparing $db from $snapshot"
    rm -rf "$db_root"/.staging.*
    prepare_db
fi
flock -u 9

if [ -n "$snapshot_date" ]; then
    age_days=$(( ($(date +%s) - $(date -d "$snapshot_date" +%s)) / 86400 ))
    echo "== advisory data from $snapshot_date ($age_days days old)"
    if [ "$age_days" -gt "$max_age_days" ]; then
        echo "warning: the advisory snapshot is more than $max_age_days days old;" \
            "advisories published since then are not checked" >&2
    fi
fi

echo "== cargo fetch --locked"
cargo fetch --locked
echo "== cargo deny --offline check"
cargo deny --offline check --show-stats advisories licenses bans sources
