# Sourced by demo.sh and test.sh: create ./.venv (once) and install MRISynthesis into it.
#   TORCH_SPEC       torch requirement to install        (default: torch==2.13.0, the version CI uses)
#   TORCH_INDEX_URL  wheel index for torch, e.g. https://download.pytorch.org/whl/cu126 for a CUDA build
#                    or https://download.pytorch.org/whl/cpu for a small CPU-only build
#   PYTHON           interpreter used to create the venv (default: python3, needs >= 3.10)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
"$python" -c 'import sys; assert sys.version_info >= (3, 10), "MRISynthesis needs Python >= 3.10"'
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
venv_python="$root/.venv/bin/python"
stamp=".venv/.mrisynthesis-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$venv_python" -m pip install --quiet --upgrade pip
  if ! "$venv_python" -c 'import torch' 2>/dev/null; then
    # Install torch first and explicitly: left to the resolver, a plain "torch" pulls a multi-GB CUDA build.
    "$venv_python" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  fi
  "$venv_python" -m pip install --quiet -e ".[test,web]"
  touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
