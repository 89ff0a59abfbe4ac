# Shared by scripts/serve, scripts/test and scripts/bench: make .venv with
# Python >= 3.11 if missing and (re)install the project when pyproject.toml
# changed. Source it with EXTRAS set ("" or "[test]").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "swfed needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=".venv/.swfed-installed$(echo "${EXTRAS:-}" | tr -c 'a-z' '-')$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${EXTRAS:-}"
    touch "$stamp"
fi
