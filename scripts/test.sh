#!/usr/bin/env bash
# Set up ./.venv with the test extras and run the whole test suite (about 3 minutes on 2 CPU cores).
source "$(dirname "$0")/env.sh"
exec python -m pytest Testing "$@"
