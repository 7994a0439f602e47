rule train_image_model:
    input:
        unpack(image_train_inputs),
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
        data_dir=image_data_dir,
        out_dir=lambda wildcards, output: str(Path(output.checkpoint).parent),
        init=lambda wildcards, input: (
            f"--init-checkpoint {input.init}" if "init" in input.keys() else ""
        ),
    shell:
        "qcsbm-bench train-images --config {params.config} --threads {threads} "
        "--dataset {wildcards.dataset} --variant {wildcards.variant} --seed {wildcards.seed} "
        "--data-dir {params.data_dir} {params.init} --out-dir {params.out_dir} > {log} 2>&1"
