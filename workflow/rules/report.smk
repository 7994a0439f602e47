RUNS = expand(
    RUN_DIR,
    dataset=config["datasets"],
    variant=config["variants"],
    seed=config["seeds"],
)
TABLES = RESULTS / "tables"
FIGURES = RESULTS / "figures"
AUTOENCODER = config["autoencoder"]["enabled"]
# The figures command names the PC samples figure "samples" and any other "samples-<sampler>".
FIGURE_NAMES = (
    ["score_fields", "asymmetry_levels"]
    + [
        "samples" if sampler == "pc" else f"samples-{sampler}"
        for sampler in config["sample"]["samplers"]
    ]
    + (["autoencoder"] if AUTOENCODER else [])
)


rule aggregate:
    input:
        metrics=[f"{run}/metrics.csv" for run in RUNS],
    output:
        tidy=str(TABLES / "all_metrics.csv"),
        summary=str(TABLES / "summary.csv"),
        table1_csv=str(TABLES / "table1.csv"),
        samplers_csv=str(TABLES / "samplers.csv"),
        samplers=report(
            str(TABLES / "samplers.md"),
            caption="../report/samplers.rst",
            category="Tables",
        ),
        table1=report(
            str(TABLES / "table1.md"),
            caption="../report/table1.rst",
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
        "qcsbm-bench aggregate --metrics {input.metrics} --out-dir {params.out_dir} "
        "> {log} 2>&1"


rule figures:
    input:
        metrics=rules.aggregate.output.tidy,
        data=expand(rules.prep_data.output, dataset=config["datasets"]),
        fields=[f"{run}/field.npz" for run in RUNS],
        samples=[
            f"{run}/samples-{sampler}.npz"
            for run in RUNS
            for sampler in config["sample"]["samplers"]
        ],
        autoencoder=rules.autoencoder.output if AUTOENCODER else [],
    output:
        pdf=[str(FIGURES / f"{name}.pdf") for name in FIGURE_NAMES],
        png=[
            report(
                str(FIGURES / f"{name}.png"),
                caption=f"../report/{name}.rst",
                category="Figures",
            )
            for name in FIGURE_NAMES
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
        # Run folders are runs/<dataset>/<variant>/seed-<seed>/, so runs/ is 3 levels up.
        runs_dir=lambda wildcards, input: str(Path(input.fields[0]).parents[3]),
        runs=lambda wildcards, input: " ".join(
            str(Path(path).parent) for path in input.fields
        ),
        data_dir=lambda wildcards, input: str(Path(input.data[0]).parent),
        out_dir=lambda wildcards, output: str(Path(output.pdf[0]).parent),
        autoencoder=lambda wildcards, input: (
            f"--autoencoder {input.autoencoder}" if AUTOENCODER else ""
        ),
    shell:
        "qcsbm-bench figures --metrics {input.metrics} --runs-dir {params.runs_dir} "
        "--runs {params.runs} --data-dir {params.data_dir} {params.autoencoder} "
        "--out-dir {params.out_dir} "
        "> {log} 2>&1"
