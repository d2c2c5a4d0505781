# report: metrics.json (DVC metrics), plots and one self-contained HTML report.
# Report settings only re-run this rule, never training.


rule report:
    input:
        manifest=MANIFEST,
        histories=expand(f"{R}/models/fold{{fold}}/history.csv", fold=FOLDS),
        fold_metrics=expand(f"{R}/models/fold{{fold}}/metrics.json", fold=FOLDS),
        oof=expand(f"{R}/models/fold{{fold}}/oof.csv", fold=FOLDS),
        val_predictions=expand(f"{R}/predictions/fold{{fold}}/val.csv", fold=FOLDS),
        val_images=f"{R}/cache/val/images.npy",
        val_index=f"{R}/cache/val/index.csv",
    output:
        metrics=REPORT_METRICS,
        html=report(REPORT_HTML, caption="../report/html.rst", category="Report"),
        table=report(f"{REPORT_DIR}/metrics_table.csv", caption="../report/table.rst", category="Report"),
        plots=report(
            directory(f"{REPORT_DIR}/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Plots",
            labels={"plot": "{name}"},
        ),
    params:
        cfg=sections("report", "submit.strategy"),
        val_cache=folder_of("input.val_images"),
        out_dir=folder_of("output.metrics"),
    log:
        f"{R}/logs/report.log",
    conda:
        "../envs/workflow.yaml"
    shell:
        "python scripts/report.py --config-json {params.cfg:q} --manifest {input.manifest} "
        "--histories {input.histories} --fold-metrics {input.fold_metrics} --oof {input.oof} "
        "--val-predictions {input.val_predictions} --val-cache {params.val_cache} "
        "--out-dir {params.out_dir} 2>&1 | tee {log}"
