rule prep_data:
    input:
        settings=stage_settings("prep_data"),
    output:
        str(RESULTS / "data" / "{dataset}.npz"),
    log:
        f"{LOGS}/prep_data/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/prep_data/{{dataset}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("prep_data")["threads"]
    resources:
        mem_mb=stage_resources("prep_data")["mem_mb"],
        runtime=stage_resources("prep_data")["runtime"],
    params:
        config=RESOLVED_CONFIG,
    shell:
        "qcsbm-bench prep-data --config {params.config} --dataset {wildcards.dataset} "
        "--out {output} > {log} 2>&1"
