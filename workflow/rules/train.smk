rule train:
    input:
        settings=stage_settings("train"),
        data=rules.prep_data.output,
    output:
        checkpoint=f"{RUN_DIR}/checkpoint.pt",
        stats=f"{RUN_DIR}/train_stats.jsonl",
        run=f"{RUN_DIR}/run.json",
    log:
        f"{LOGS}/train/{{dataset}}/{{variant}}/seed-{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{dataset}}/{{variant}}/seed-{{seed}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("train")["threads"]
    resources:
        mem_mb=stage_resources("train")["mem_mb"],
        runtime=stage_resources("train")["runtime"],
        gpu=stage_resources("train")["gpu"],
    params:
        config=RESOLVED_CONFIG,
        out_dir=lambda wildcards, output: str(Path(output.checkpoint).parent),
    shell:
        "qcsbm-bench train --config {params.config} --threads {threads} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --seed {wildcards.seed} --data {input.data} "
        "--out-dir {params.out_dir} > {log} 2>&1"
