SHARDS = config["sample"]["shards"]
# The file names are those of qcsbm_bench.image_sampling.shard_path: four-digit numbers.
SHARD_FILE = f"{RUN_DIR}/samples/{{sampler}}/shard-{{shard}}-of-{SHARDS:04d}.npz"
SHARD_NUMBERS = [f"{shard:04d}" for shard in range(SHARDS)]


rule sample_image_shard:
    input:
        settings=stage_settings("sample"),
        checkpoint=rules.train_image_model.output.checkpoint,
        data=rules.prep_image_data.output.data,
    output:
        SHARD_FILE,
    log:
        f"{LOGS}/sample/{{dataset}}/{{variant}}/seed-{{seed}}-{{sampler}}-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/sample/{{dataset}}/{{variant}}/seed-{{seed}}-{{sampler}}-{{shard}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("sample")["threads"]
    resources:
        mem_mb=stage_resources("sample")["mem_mb"],
        runtime=stage_resources("sample")["runtime"],
        gpu=stage_resources("sample")["gpu"],
    params:
        config=RESOLVED_CONFIG,
        data_dir=image_data_dir,
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
        shards=SHARDS,
    shell:
        "qcsbm-bench sample-images --config {params.config} --threads {threads} "
        "--dataset {wildcards.dataset} --variant {wildcards.variant} --seed {wildcards.seed} "
        "--sampler {wildcards.sampler} --checkpoint {input.checkpoint} --data-dir {params.data_dir} "
        "--shard {wildcards.shard} --shards {params.shards} --out-dir {params.out_dir} "
        "> {log} 2>&1"


rule merge_image_samples:
    input:
        shards=expand(SHARD_FILE, shard=SHARD_NUMBERS, allow_missing=True),
    output:
        f"{RUN_DIR}/samples-{{sampler}}.npz",
    log:
        f"{LOGS}/merge_samples/{{dataset}}/{{variant}}/seed-{{seed}}-{{sampler}}.log",
    benchmark:
        f"{BENCHMARKS}/merge_samples/{{dataset}}/{{variant}}/seed-{{seed}}-{{sampler}}.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("merge_samples")["threads"]
    resources:
        mem_mb=stage_resources("merge_samples")["mem_mb"],
        runtime=stage_resources("merge_samples")["runtime"],
    params:
        n_samples=lambda wildcards: n_samples_for(config, wildcards.dataset),
    shell:
        "qcsbm-bench merge-samples --shards {input.shards} --n-samples {params.n_samples} "
        "--out {output} > {log} 2>&1"
