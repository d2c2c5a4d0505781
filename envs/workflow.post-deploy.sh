#!/usr/bin/env bash
# Installs the project into the rules' conda environment (`snakemake --sdm conda`). Snakemake
# runs this once, right after creating the environment from workflow.yaml (which pins every
# dependency), with the environment active and from a copy under .snakemake/conda/: so the
# project is found through DEEPFAKE_WORKFLOW_ROOT, which rules/common.smk sets to the folder of
# the Snakefile, never relative to this file. Editable (-e): the environment runs the code of
# that checkout as it is now; --no-deps: the dependencies come pinned from workflow.yaml.
set -euo pipefail
root="${DEEPFAKE_WORKFLOW_ROOT:-}"
if [ -z "$root" ] || [ ! -f "$root/pyproject.toml" ]; then
    echo "error: DEEPFAKE_WORKFLOW_ROOT='$root' is not the project folder (no pyproject.toml there);" \
         "run snakemake on the project's Snakefile" >&2
    exit 1
fi
python -m pip install --no-deps ${DEEPFAKE_WORKFLOW_PIP_ARGS:-} -e "$root"
