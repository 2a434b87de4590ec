#!/usr/bin/env bash
# Coverage-guided fuzzing of ltrcore-core against the plain reference (issue 10).
#
#   rust/fuzz/run.sh [SECONDS] [-- extra libFuzzer flags]     # default 1800 s (30 min), 1 job
#
# It builds the target `batches` (cargo-fuzz, libFuzzer, release with debug assertions and
# overflow checks; see FUZZ_FLAGS below) and runs it from the committed corpus `corpus/batches/`; new inputs go to
# `target/corpus-work/` (not committed), crashes to `artifacts/batches/`. Every input must end
# in a clean error the reference predicts or a result equal to the reference's; anything else
# (a panic, an InternalError, a wrong number, a hang past -timeout, memory past -rss_limit_mb)
# is a crash. Known deviations listed in FINDINGS.md are let through; LTRCORE_FUZZ_STRICT=1
# reports them too.
#
# Reproduce an artifact:
#   cd rust/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir . -s none --no-trace-compares batches artifacts/batches/crash-…
#   cargo run --example show -- artifacts/batches/crash-…     # the case in full and the verdict (stable)
# Minimise one:  RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir . batches artifacts/batches/crash-…
# Shrink the corpus after a run (what was done for the committed corpus): put target/corpus-work
# and corpus/batches together in target/cmin-all, then
#   RUSTC_BOOTSTRAP=1 cargo fuzz cmin --fuzz-dir . -s none --no-trace-compares batches target/cmin-all
# (keeps every input that adds an edge or a hit-count bucket: thousands), and to a small set that
# still covers every edge (libFuzzer's greedy set cover, edges only):
#   target/x86_64-unknown-linux-gnu/release/batches -set_cover_merge=1 -use_counters=0 \
#       corpus/batches target/cmin-all          # into an emptied corpus/batches
# Replay the committed corpus without the fuzzer (stable): cargo test --manifest-path rust/fuzz/Cargo.toml
#
# The machine has only a stable rustc: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly flags
# (-Zsanitizer=address and friends) to it.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-1800}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
export RUSTC_BOOTSTRAP=1
# No sanitizer and no compare tracing by default: a run is dominated by the core's calendar set-up
# and thread pool, which those slow down about 2x, and the core checks what an unsafe read could
# trip on. Debug assertions and overflow checks stay on. E.g. FUZZ_FLAGS="-s address" to use ASan.
FUZZ_FLAGS=${FUZZ_FLAGS:--s none --no-trace-compares}
cargo fuzz build --fuzz-dir . $FUZZ_FLAGS batches
mkdir -p target/corpus-work artifacts/batches
exec cargo fuzz run --fuzz-dir . $FUZZ_FLAGS batches target/corpus-work corpus/batches -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 "$@"
