# submit: combine the fold models' test predictions into submission.csv (img_name,y_pred),
# checked before writing: every test image once, 0 <= y_pred <= 1, no NaN.


rule submit:
    input:
        manifest=split_manifest(cached("test")),
        predictions=expand(rules.predict.output[0], fold=FOLDS, split="test"),
        fold_metrics=expand(rules.train.output.metrics, fold=FOLDS),
        code=code("submit"),
    output:
        report(f"{R}/submission.csv", caption="../report/submission.rst", category="Submission"),
    log:
        f"{R}/logs/submit.log",
    benchmark:
        f"{R}/benchmarks/submit.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        cfg=sections("submit"),
    shell:
        "python scripts/submit.py --config-json {params.cfg:q} --split-manifest {input.manifest} "
        "--predictions {input.predictions} --fold-metrics {input.fold_metrics} --out {output} "
        "2>&1 | tee {log}"
