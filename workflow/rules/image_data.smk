IMAGE_ARRAYS = ("train.npy", "test.npy", "train_labels.npy", "test_labels.npy")


rule prep_image_data:
    input:
        settings=stage_settings("prep_data"),
    output:
        arrays=[f"{IMAGE_DATA}/{name}" for name in IMAGE_ARRAYS],
        data=f"{IMAGE_DATA}/meta.json",
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
        out_dir=lambda wildcards, output: str(Path(output.data).parent),
    shell:
        "qcsbm-bench prep-images --config {params.config} --dataset {wildcards.dataset} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule train_classifier:
    input:
        settings=stage_settings("classifier"),
        data=rules.prep_image_data.output.data,
    output:
        classifier=f"{IMAGE_DATA}/classifier.pt",
        stats=f"{IMAGE_DATA}/classifier.json",
    log:
        f"{LOGS}/classifier/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/classifier/{{dataset}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("classifier")["threads"]
    resources:
        mem_mb=stage_resources("classifier")["mem_mb"],
        runtime=stage_resources("classifier")["runtime"],
        gpu=stage_resources("classifier")["gpu"],
    params:
        config=RESOLVED_CONFIG,
        data_dir=image_data_dir,
    shell:
        "qcsbm-bench train-classifier --config {params.config} --threads {threads} "
        "--dataset {wildcards.dataset} --data-dir {params.data_dir} --out {output.classifier} "
        "--stats-out {output.stats} > {log} 2>&1"


rule reference_features:
    input:
        unpack(reference_inputs),
    output:
        f"{IMAGE_DATA}/reference.npz",
    log:
        f"{LOGS}/reference/{{dataset}}.log",
    benchmark:
        f"{BENCHMARKS}/reference/{{dataset}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("reference")["threads"]
    resources:
        mem_mb=stage_resources("reference")["mem_mb"],
        runtime=stage_resources("reference")["runtime"],
        gpu=stage_resources("reference")["gpu"],
    params:
        config=RESOLVED_CONFIG,
        data_dir=image_data_dir,
        classifier=lambda wildcards, input: (
            f"--classifier {input.classifier}" if "classifier" in input.keys() else ""
        ),
    shell:
        "qcsbm-bench reference-features --config {params.config} --threads {threads} "
        "--dataset {wildcards.dataset} --data-dir {params.data_dir} {params.classifier} "
        "--out {output} > {log} 2>&1"
