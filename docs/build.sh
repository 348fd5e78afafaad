#!/usr/bin/env bash
# Build the documentation strictly (any warning, broken link, missing reference or failing tutorial
# cell fails), into docs/_build/html. --serve then serves it on http://127.0.0.1:8001.
# Uses $PYTHON, else .venv/bin/python when there is one (scripts/test.sh makes it), else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && python=.venv/bin/python
export TORCHLOGREG_DATA="${TORCHLOGREG_DATA:-../shared/data}"
rm -rf docs/_build/html docs/jupyter_execute
"$python" -m sphinx -W --keep-going -n -q -b html docs docs/_build/html
echo "docs built in ${SECONDS} s: docs/_build/html/index.html"
if [ "${1:-}" = "--serve" ]; then
  exec "$python" -m http.server --bind 127.0.0.1 --directory docs/_build/html 8001
fi
