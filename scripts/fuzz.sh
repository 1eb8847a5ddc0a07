#!/usr/bin/env bash
# Fuzzes every target in fuzz/ for SECONDS each (default 30) and fails on any crash or
# broken property. Usage: scripts/fuzz.sh [SECONDS]
#
# Needs a nightly toolchain (cargo-fuzz builds with sanitizer flags) and installs
# cargo-fuzz once. The first build takes several minutes (the AWS SDK and aws-lc);
# later ones are incremental. The build goes to fuzz/target, or to
# $CARGO_TARGET_DIR/fuzz when CARGO_TARGET_DIR is set, kept apart from ordinary builds
# because every crate is compiled with different flags.
#
# The committed seeds (fuzz/corpus/TARGET) and past crashes (fuzz/regressions/TARGET)
# are read, never written: new inputs that libFuzzer finds go to a temporary directory
# that is removed afterwards. A crash is saved by libFuzzer under fuzz/artifacts/TARGET/
# (not committed); reproduce it with
#   cargo +nightly fuzz run --debug-assertions TARGET fuzz/artifacts/TARGET/crash-...
# and keep it as fuzz/regressions/TARGET/NAME once understood.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

cargo_fuzz_version=0.13.2
targets=(reference file_name config json_key token_response)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $cargo_fuzz_version (about a minute, once)"
    cargo install --locked cargo-fuzz --version "$cargo_fuzz_version"
fi

target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-$PWD/fuzz/target}"
# Debug assertions catch integer overflow and the standard library's own checks; the
# address sanitizer (cargo-fuzz's default) covers the unsafe code under the parsers.
fuzz_flags=(--debug-assertions --target-dir "$target_dir")

# anyhow captures a backtrace for every error when RUST_BACKTRACE is set, and the targets
# format errors with {:?}: that alone would cut the executions per second by 20x.
export RUST_LIB_BACKTRACE=0

work="$(mktemp -d "${TMPDIR:-/tmp}/secret-sidecar-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== cargo +nightly fuzz build ($(cargo fuzz --version))"
start=$SECONDS
cargo +nightly fuzz build "${fuzz_flags[@]}"
echo "   built in $((SECONDS - start)) s"

failed=()
summary=()
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds} s"
    mkdir -p "$work/$target"
    inputs=("$work/$target" "fuzz/corpus/$target")
    if [ -d "fuzz/regressions/$target" ]; then
        inputs+=("fuzz/regressions/$target")
    fi
    options=(
        -max_total_time="$seconds"
        -timeout=10
        -rss_limit_mb=2048
        -max_len=4096
        -print_final_stats=1
    )
    if [ -f "fuzz/dicts/$target.dict" ]; then
        options+=(-dict="fuzz/dicts/$target.dict")
    fi
    log="$work/$target.log"
    status=0
    cargo +nightly fuzz run "${fuzz_flags[@]}" "$target" "${inputs[@]}" -- "${options[@]}" \
        >"$log" 2>&1 || status=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    if [ "$status" -eq 0 ]; then
        summary+=("$(printf '%-10s ok      %12s executions in %s s' "$target" "${runs:-?}" "$seconds")")
    else
        failed+=("$target")
        summary+=("$(printf '%-10s FAILED  %12s executions (exit %s)' "$target" "${runs:-?}" "$status")")
        # The panic or sanitizer message, and the input with how to reproduce it.
        {
            awk '/panicked at/ {on = 1} /^(stack backtrace:|note: |==)/ {on = 0} on' "$log" | head -n 40
            grep -E '^(SUMMARY|==[0-9]+==ERROR|ALARM)|out-of-memory' "$log" | head -n 5
            sed -n '/^Failing input:/,$p' "$log" | grep -v '^Error: Fuzz target exited' | head -n 30
        } >&2
    fi
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "error: fuzzing failed for: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
