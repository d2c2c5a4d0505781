# make_folds: stratified, seeded folds from the training labels (not the cache, so a cache
# change never re-splits).


rule make_folds:
    input:
        manifest=split_manifest("train"),
        code=code("make_folds"),
    output:
        f"{R}/folds.csv",
    log:
        f"{R}/logs/make_folds.log",
    benchmark:
        f"{R}/benchmarks/make_folds.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        cfg=sections("seed", "folds"),
    shell:
        "python scripts/make_folds.py --config-json {params.cfg:q} --split-manifest {input.manifest} "
        "--out {output} 2>&1 | tee {log}"
