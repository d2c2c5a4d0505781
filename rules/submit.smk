# submit: combine the fold models' test predictions into submission.csv (img_name,y_pred),
# checked before writing: every test image once, 0 <= y_pred <= 1, no NaN.


rule submit:
    input:
        manifest=MANIFEST,
        predictions=expand(f"{R}/predictions/fold{{fold}}/test.csv", fold=FOLDS),
        fold_metrics=expand(f"{R}/models/fold{{fold}}/metrics.json", fold=FOLDS),
    output:
        report(SUBMISSION, caption="../report/submission.rst", category="Submission"),
    params:
        cfg=sections("submit"),
    log:
        f"{R}/logs/submit.log",
    conda:
        "../envs/workflow.yaml"
    shell:
        "python scripts/submit.py --config-json {params.cfg:q} --manifest {input.manifest} "
        "--predictions {input.predictions} --fold-metrics {input.fold_metrics} --out {output} "
        "2>&1 | tee {log}"
