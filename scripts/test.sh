#!/usr/bin/env bash
# Install everything and run all checks (lint + tests). The README's test command; CI runs it too.
# Chromium (for the browser tests) comes from Debian's packages when we can install it; without it,
# those tests skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
    >/dev/null 2>&1 || echo "warning: could not install chromium; browser tests will skip" >&2
fi
python3 -m venv .venv
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1 -e ".[dev]"
.venv/bin/ruff check
TORCHLOGREG_DATA="${TORCHLOGREG_DATA:-../shared/data}" .venv/bin/pytest "$@"
