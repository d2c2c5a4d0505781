# train: one job per fold on train.devices GPUs (or the CPU); predict: each fold model scores
# the official validation split and the test split, in one process.


rule train:
    input:
        images=one(rules.build_cache.output.images, split="train"),
        index=one(rules.build_cache.output.index, split="train"),
        folds=rules.make_folds.output[0],
        code=code("train"),
    output:
        checkpoint=f"{R}/models/fold{{fold}}/best.pt",
        history=f"{R}/models/fold{{fold}}/history.csv",
        oof=f"{R}/models/fold{{fold}}/oof.csv",
        metrics=f"{R}/models/fold{{fold}}/metrics.json",
    log:
        f"{R}/logs/train_fold{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/train_fold{{fold}}.tsv"
    wildcard_constraints:
        fold=r"\d+",
    conda:
        "../envs/workflow.yaml"
    # train.devices > 1: scripts/train.py starts that many processes (DistributedDataParallel), each
    # with its GPU and an equal share of the threads (4 each, fewer if --cores is lower).
    threads: 4 * config["train"]["devices"]
    resources:
        gpu=config["train"]["devices"],
    params:
        cfg=sections("seed", "model", "train"),
        cache_dir=folder_of("input.images"),
        out_dir=folder_of("output.checkpoint"),
        # Not an output: Snakemake deletes outputs before a job, the resume state must survive a kill.
        state_dir=f"{R}/state/train_fold{{fold}}",
    shell:
        "python scripts/train.py --config-json {params.cfg:q} --cache-dir {params.cache_dir} "
        "--folds {input.folds} --fold {wildcards.fold} --out-dir {params.out_dir} "
        "--state-dir {params.state_dir} --threads {threads} 2>&1 | tee {log}"


rule predict:
    input:
        images=lambda w: one(rules.build_cache.output.images, split=cached(w.split)),
        index=lambda w: one(rules.build_cache.output.index, split=cached(w.split)),
        checkpoint=rules.train.output.checkpoint,
        code=code("predict"),
    output:
        f"{R}/predictions/fold{{fold}}/{{split}}.csv",
    log:
        f"{R}/logs/predict_fold{{fold}}_{{split}}.log",
    benchmark:
        f"{R}/benchmarks/predict_fold{{fold}}_{{split}}.tsv"
    wildcard_constraints:
        fold=r"\d+",
        split="val|test",
    conda:
        "../envs/workflow.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        cfg=sections("predict", "train.device"),
        cache_dir=folder_of("input.images"),
    shell:
        "python scripts/predict.py --config-json {params.cfg:q} --checkpoint {input.checkpoint} "
        "--cache-dir {params.cache_dir} --out {output} "
        "--threads {threads} 2>&1 | tee {log}"
