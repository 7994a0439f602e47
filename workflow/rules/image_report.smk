IMAGE_RUNS = expand(
    RUN_DIR,
    dataset=config["datasets"],
    variant=config["variants"],
    seed=config["seeds"],
)
IMAGE_SAMPLERS = config["sample"]["samplers"]
IMAGE_TABLES = RESULTS / "tables"
IMAGE_FIGURES = RESULTS / "figures"
IMAGE_FIGURE_NAMES = ["asymmetry_levels"] + [
    f"samples-{sampler}" for sampler in IMAGE_SAMPLERS
]


rule image_aggregate:
    input:
        metrics=[
            f"{run}/{name}"
            for run in IMAGE_RUNS
            for name in ["likelihood.csv", "asymmetry.csv"]
            + [f"quality-{sampler}.csv" for sampler in IMAGE_SAMPLERS]
        ],
    output:
        tidy=str(IMAGE_TABLES / "all_metrics.csv"),
        summary=str(IMAGE_TABLES / "summary.csv"),
        table2_csv=str(IMAGE_TABLES / "table2.csv"),
        table3_csv=str(IMAGE_TABLES / "table3.csv"),
        table2=report(
            str(IMAGE_TABLES / "table2.md"),
            caption="../report/table2.rst",
            category="Tables",
        ),
        table3=report(
            str(IMAGE_TABLES / "table3.md"),
            caption="../report/table3.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/aggregate.log",
    benchmark:
        f"{BENCHMARKS}/aggregate.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("aggregate")["threads"]
    resources:
        mem_mb=stage_resources("aggregate")["mem_mb"],
        runtime=stage_resources("aggregate")["runtime"],
    params:
        out_dir=lambda wildcards, output: str(Path(output.tidy).parent),
    shell:
        "qcsbm-bench aggregate-images --metrics {input.metrics} --out-dir {params.out_dir} "
        "> {log} 2>&1"


rule image_figures:
    input:
        metrics=rules.image_aggregate.output.tidy,
        samples=[
            f"{run}/samples-{sampler}.npz"
            for run in IMAGE_RUNS
            for sampler in IMAGE_SAMPLERS
        ],
    output:
        pdf=[str(IMAGE_FIGURES / f"{name}.pdf") for name in IMAGE_FIGURE_NAMES],
        png=[
            report(
                str(IMAGE_FIGURES / f"{name}.png"),
                caption=f"../report/image_{name.split('-')[0]}.rst",
                category="Figures",
            )
            for name in IMAGE_FIGURE_NAMES
        ],
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCHMARKS}/figures.tsv"
    conda:
        "../../envs/qcsbm-bench.yaml"
    threads: stage_resources("figures")["threads"]
    resources:
        mem_mb=stage_resources("figures")["mem_mb"],
        runtime=stage_resources("figures")["runtime"],
    params:
        out_dir=lambda wildcards, output: str(Path(output.pdf[0]).parent),
    shell:
        "qcsbm-bench figures-images --metrics {input.metrics} --samples {input.samples} "
        "--out-dir {params.out_dir} > {log} 2>&1"
