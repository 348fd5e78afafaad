#!/usr/bin/env bash
# Install everything and run all checks (lint, the docs build, tests). The README's test command; CI runs it.
# Chromium (for the browser tests) comes from Debian's packages when we can install it; without it,
# those tests skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
    >/dev/null 2>&1 || echo "warning: could not install chromium; browser tests will skip" >&2
fi
python3 -m venv .venv
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 -e ".[dev,docs]"
.venv/bin/ruff check
export TORCHLOGREG_DATA="${TORCHLOGREG_DATA:-../shared/data}"
# The documentation, strictly (a broken link, a missing reference or a failing tutorial cell fails);
# on a full run only, before pytest, whose tests/test_docs.py checks the built site.
if [ "$#" = 0 ]; then
  echo "== docs"
  bash docs/build.sh
fi
.venv/bin/pytest "$@"
# MKL picks its float32 kernels by CPU and by the number of rows, so a float comparison that holds on
# this CPU may fail on another. Run every test marked `numerics` again under other MKL code paths:
# AVX2 (what an AVX-512 Intel CPU falls back to) and COMPATIBLE (the generic kernels, on any CPU).
if [ "$#" = 0 ]; then
  for code_path in MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=COMPATIBLE; do
    echo "== numerics tests under $code_path"
    env "$code_path" .venv/bin/pytest -q -m numerics -p no:cacheprovider
  done
fi
