# fetch_data: demo synthesis, a local copy read in place, or downloaded archives;
# then every split's labels are checked against its images and summarised in a manifest.


rule fetch_data:
    input:
        fetch_data_inputs,
    output:
        manifest=MANIFEST,
        raw=directory(RAW_ROOT) if config["data"]["source"] != "local" else [],
    params:
        cfg=sections("results_dir", "seed", "data"),
    threads: 4
    log:
        f"{R}/logs/fetch_data.log",
    conda:
        "../envs/workflow.yaml"
    shell:
        "python scripts/fetch_data.py --config-json {params.cfg:q} "
        "--manifest {output.manifest} --workers {threads} 2>&1 | tee {log}"
