# fetch_data: demo synthesis, a local copy read in place, or downloaded archives; every
# split's labels are checked against its images and the data set summarised (dataset.json,
# read by the report). check_split: one split's manifest, read by that split's stages.


rule fetch_data:
    input:
        label_files,
        code=code("fetch_data"),
    output:
        manifest=f"{R}/data/dataset.json",
        raw=[] if LOCAL else directory(RAW_ROOT),
    log:
        f"{R}/logs/fetch_data.log",
    benchmark:
        f"{R}/benchmarks/fetch_data.tsv"
    conda:
        "../envs/workflow.yaml"
    threads: 4
    params:
        cfg=sections("results_dir", "seed", "data"),
    shell:
        "python scripts/fetch_data.py --config-json {params.cfg:q} --manifest {output.manifest} "
        "--workers {threads} 2>&1 | tee {log}"


# Per split, and for a local copy independent of fetch_data: editing one split's label file
# re-runs that split's stages only (a val label fix must not rebuild the train cache: hours
# on the real set). Demo and downloaded data are made as a whole: there it follows fetch_data.
rule check_split:
    input:
        split_source,
        code=code("check_split"),
    output:
        f"{R}/data/splits/{{split}}.json",
    log:
        f"{R}/logs/check_split_{{split}}.log",
    benchmark:
        f"{R}/benchmarks/check_split_{{split}}.tsv"
    wildcard_constraints:
        split="train|val|test",
    conda:
        "../envs/workflow.yaml"
    params:
        images=lambda w: dw_layout.split_paths(config, w.split).images,
        labels=lambda w: dw_layout.split_paths(config, w.split).labels,
    shell:
        "python scripts/check_split.py --split {wildcards.split} --images {params.images:q} "
        "--labels {params.labels:q} --out {output} 2>&1 | tee {log}"
