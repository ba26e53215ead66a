#!/usr/bin/env bash
# Quick start, first command: install permwatch into .venv and run the demo of the incident.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/permwatch demo "$@"
