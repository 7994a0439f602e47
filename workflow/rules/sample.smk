rule sample:
    input:
        settings=stage_settings("sample"),
        checkpoint=rules.train.output.checkpoint,
    output:
        f"{RUN_DIR}/samples-{{sampler}}.npz",
    log:
        f"{LOGS}/sample/{{dataset}}/{{variant}}/seed-{{seed}}-{{sampler}}.log",
    benchmark:
        f"{BENCHMARKS}/sample/{{dataset}}/{{variant}}/seed-{{seed}}-{{sampler}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("sample")["threads"]
    resources:
        mem_mb=stage_resources("sample")["mem_mb"],
        runtime=stage_resources("sample")["runtime"],
        gpu=stage_resources("sample")["gpu"],
    params:
        config=RESOLVED_CONFIG,
    shell:
        "qcsbm-bench sample --config {params.config} --threads {threads} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --seed {wildcards.seed} --sampler {wildcards.sampler} "
        "--checkpoint {input.checkpoint} --out {output} > {log} 2>&1"
