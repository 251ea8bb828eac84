#!/usr/bin/env bash
# Spark resource discovery script for GPUs (spark.{worker,executor}.resource.gpu.discoveryScript): prints the
# addresses of this machine's NVIDIA GPUs as Spark's ResourceInformation JSON, e.g. {"name": "gpu", "addresses": ["0","1"]}.
set -euo pipefail
ids=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr -d ' ' | paste -sd, - || true)
addresses=$(printf '%s' "$ids" | sed -e 's/\([0-9][0-9]*\)/"\1"/g')
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
