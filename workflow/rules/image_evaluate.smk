rule sample_quality:
    input:
        unpack(sample_quality_inputs),
    output:
        f"{RUN_DIR}/quality-{{sampler}}.csv",
    log:
        f"{LOGS}/sample_quality/{{dataset}}/{{variant}}/seed-{{seed}}-{{sampler}}.log",
    benchmark:
        f"{BENCHMARKS}/sample_quality/{{dataset}}/{{variant}}/seed-{{seed}}-{{sampler}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("sample_quality")["threads"]
    resources:
        mem_mb=stage_resources("sample_quality")["mem_mb"],
        runtime=stage_resources("sample_quality")["runtime"],
        gpu=stage_resources("sample_quality")["gpu"],
    params:
        config=RESOLVED_CONFIG,
        classifier=lambda wildcards, input: (
            f"--classifier {input.classifier}" if "classifier" in input.keys() else ""
        ),
    shell:
        "qcsbm-bench sample-quality --config {params.config} --threads {threads} "
        "--dataset {wildcards.dataset} --variant {wildcards.variant} --seed {wildcards.seed} "
        "--sampler {wildcards.sampler} --samples {input.samples} "
        "--reference {input.reference} {params.classifier} --out {output} > {log} 2>&1"


rule image_likelihood:
    input:
        settings=stage_settings("likelihood"),
        checkpoint=rules.train_image_model.output.checkpoint,
        data=rules.prep_image_data.output.data,
    output:
        f"{RUN_DIR}/likelihood.csv",
    log:
        f"{LOGS}/likelihood/{{dataset}}/{{variant}}/seed-{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/likelihood/{{dataset}}/{{variant}}/seed-{{seed}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("likelihood")["threads"]
    resources:
        mem_mb=stage_resources("likelihood")["mem_mb"],
        runtime=stage_resources("likelihood")["runtime"],
        gpu=stage_resources("likelihood")["gpu"],
    params:
        config=RESOLVED_CONFIG,
        data_dir=image_data_dir,
    shell:
        "qcsbm-bench image-likelihood --config {params.config} --threads {threads} "
        "--dataset {wildcards.dataset} --variant {wildcards.variant} --seed {wildcards.seed} "
        "--checkpoint {input.checkpoint} --data-dir {params.data_dir} --out {output} "
        "> {log} 2>&1"


rule image_asymmetry:
    input:
        settings=stage_settings("asymmetry"),
        checkpoint=rules.train_image_model.output.checkpoint,
        data=rules.prep_image_data.output.data,
    output:
        f"{RUN_DIR}/asymmetry.csv",
    log:
        f"{LOGS}/asymmetry/{{dataset}}/{{variant}}/seed-{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/asymmetry/{{dataset}}/{{variant}}/seed-{{seed}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("asymmetry")["threads"]
    resources:
        mem_mb=stage_resources("asymmetry")["mem_mb"],
        runtime=stage_resources("asymmetry")["runtime"],
        gpu=stage_resources("asymmetry")["gpu"],
    params:
        config=RESOLVED_CONFIG,
        data_dir=image_data_dir,
    shell:
        "qcsbm-bench image-asymmetry --config {params.config} --threads {threads} "
        "--dataset {wildcards.dataset} --variant {wildcards.variant} --seed {wildcards.seed} "
        "--checkpoint {input.checkpoint} --data-dir {params.data_dir} --out {output} "
        "> {log} 2>&1"
