#!/usr/bin/env bash
# Every performance figure of README.md's Performance section, from one command:
#
#   benches/figures.sh                     # all: raw throughput (1 M recipients), then the budget
#                                          # job (100 000 recipients under IO's window: ~2 hours)
#   benches/figures.sh --only raw          # raw throughput only (a few minutes)
#   benches/figures.sh --only raw --raw-recipients 10000000   # the 10 M peak-RSS figure
#   benches/figures.sh --only budget       # the budget job only
#
# Installs what it needs (wrk from Debian's packages, for the fake's ceiling), builds corriere in
# release mode and runs `corriere figures` with the arguments given. Everything runs on loopback
# (127.0.0.1) against the bundled fake IO; nothing touches the real IO API.
# The criterion benches are separate: `cargo bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    echo "figures: installing wrk (Debian package)" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq wrk >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null
    fi
fi

cargo build --release --locked --bin corriere
# Not `exec`: resource usage of reaped children survives exec, and `corriere figures` measures
# the job's own CPU and peak RSS as its first reaped child (cargo's would be counted in).
target/release/corriere figures --wrk "$(command -v wrk)" --dir target/figures "$@"
