# build_cache: one resized uint8 array (memmap) + index CSV per split, built once.


rule build_cache:
    input:
        manifest=lambda w: split_manifest(w.split),
        code=code("build_cache"),
    output:
        images=f"{R}/cache/{{split}}/images.npy",
        index=f"{R}/cache/{{split}}/index.csv",
        bad=f"{R}/cache/{{split}}/bad_images.csv",
        info=f"{R}/cache/{{split}}/cache_info.json",
    log:
        f"{R}/logs/build_cache_{{split}}.log",
    benchmark:
        f"{R}/benchmarks/build_cache_{{split}}.tsv"
    wildcard_constraints:
        split="train|val|test",
    conda:
        "../envs/workflow.yaml"
    # decode workers; Snakemake scales this down to --cores (a cluster profile sets its own)
    threads: 32
    params:
        cfg=sections("cache"),
        out_dir=folder_of("output.images"),
    shell:
        "python scripts/build_cache.py --config-json {params.cfg:q} --split-manifest {input.manifest} "
        "--out-dir {params.out_dir} --workers {threads} 2>&1 | tee {log}"
