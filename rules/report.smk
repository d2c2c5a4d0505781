# report: metrics.json, headline.json (DVC metrics: the few numbers that rank a run), plots,
# provenance.json and one self-contained HTML report.
# Report settings only re-run this rule, never training. The rule passes the whole config: the
# report reads report.* and submit.strategy, and provenance.json records the sha256 of all of it
# (the effective config), so any config change re-runs this rule and the hash is never stale.


rule report:
    input:
        manifest=rules.fetch_data.output.manifest,
        histories=expand(rules.train.output.history, fold=FOLDS),
        fold_metrics=expand(rules.train.output.metrics, fold=FOLDS),
        oof=expand(rules.train.output.oof, fold=FOLDS),
        val_predictions=expand(rules.predict.output[0], fold=FOLDS, split="val"),
        val_images=one(rules.build_cache.output.images, split="val"),
        val_index=one(rules.build_cache.output.index, split="val"),
        code=code("report"),
    output:
        metrics=f"{R}/reports/metrics.json",
        headline=f"{R}/reports/headline.json",
        provenance=f"{R}/reports/provenance.json",
        html=report(f"{R}/reports/report.html", caption="../report/html.rst", category="Report"),
        table=report(f"{R}/reports/metrics_table.csv", caption="../report/table.rst", category="Report"),
        plots=report(
            directory(f"{R}/reports/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Plots",
            labels={"plot": "{name}"},
        ),
    log:
        f"{R}/logs/report.log",
    benchmark:
        f"{R}/benchmarks/report.tsv"
    conda:
        "../envs/workflow.yaml"
    params:
        cfg=sections(*sorted(config)),
        val_cache=folder_of("input.val_images"),
        out_dir=folder_of("output.metrics"),
    shell:
        "python scripts/report.py --config-json {params.cfg:q} --manifest {input.manifest} "
        "--histories {input.histories} --fold-metrics {input.fold_metrics} --oof {input.oof} "
        "--val-predictions {input.val_predictions} --val-cache {params.val_cache} "
        "--out-dir {params.out_dir} 2>&1 | tee {log}"
