rule evaluate:
    input:
        settings=stage_settings("evaluate"),
        checkpoint=rules.train.output.checkpoint,
        data=rules.prep_data.output,
        samples=expand(
            f"{RUN_DIR}/samples-{{sampler}}.npz",
            sampler=config["sample"]["samplers"],
            allow_missing=True,
        ),
    output:
        metrics=f"{RUN_DIR}/metrics.csv",
        field=f"{RUN_DIR}/field.npz",
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{variant}}/seed-{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate/{{dataset}}/{{variant}}/seed-{{seed}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("evaluate")["threads"]
    resources:
        mem_mb=stage_resources("evaluate")["mem_mb"],
        runtime=stage_resources("evaluate")["runtime"],
        gpu=stage_resources("evaluate")["gpu"],
    params:
        config=RESOLVED_CONFIG,
    shell:
        "qcsbm-bench evaluate --config {params.config} --threads {threads} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --seed {wildcards.seed} --checkpoint {input.checkpoint} "
        "--data {input.data} --samples {input.samples} --out {output.metrics} "
        "--field-out {output.field} > {log} 2>&1"


rule autoencoder:
    input:
        settings=stage_settings("autoencoder"),
    output:
        str(RESULTS / "autoencoder" / "curves.jsonl"),
    log:
        f"{LOGS}/autoencoder.log",
    benchmark:
        f"{BENCHMARKS}/autoencoder.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("autoencoder")["threads"]
    resources:
        mem_mb=stage_resources("autoencoder")["mem_mb"],
        runtime=stage_resources("autoencoder")["runtime"],
    params:
        config=RESOLVED_CONFIG,
    shell:
        "qcsbm-bench autoencoder --config {params.config} --threads {threads} --out {output} > {log} 2>&1"
