#!/usr/bin/env bash
# `make demo`: the CPU speedrun on the embedded shakespeare corpus, <= 10 minutes end to end on 2 cores.
# Tokenizer -> shards -> pretrain (a fixed wall-clock budget) -> full validation in bits/byte -> samples -> report.
# Extra arguments are passed through, e.g. `bash scripts/speedrun_cpu.sh --train_seconds=120`.
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP reads this when torch loads; passive waiting keeps training steady on a shared machine (docs/log.md).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
start=$(date +%s)
.venv/bin/lmstack speedrun configs/speedrun_cpu.yaml --overwrite "$@"
echo "speedrun: $(( $(date +%s) - start )) s end to end, process start included"
