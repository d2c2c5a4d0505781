# Deepfake-image detection workflow: raw data -> resized cache -> folds -> per-fold training
# -> predictions -> validation report -> submission.csv. See README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/cache.smk"
include: "rules/folds.smk"
include: "rules/train.smk"
include: "rules/report.smk"
include: "rules/submit.smk"


rule all:
    default_target: True
    input:
        rules.submit.output,
        rules.report.output.metrics,
        rules.report.output.html,
