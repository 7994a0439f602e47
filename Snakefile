# qcsbm-bench: conservative vs unconstrained vs quasi-conservative score models.
# Stages: prep_data -> train -> sample -> evaluate -> aggregate -> figures, over the
# wildcards dataset x variant x seed. A config's `kind` picks the DAG: "toy" (2-D data and the
# one-layer autoencoder example) or "images" (NCSN++ on 32x32 image sets, with sharded
# sampling, FID or classifier FD, bits/dim and Jacobian asymmetry by noise level).
# Run: snakemake --cores all [--configfile workflow/config/<name>.yaml]

from pathlib import Path

from qcsbm_bench.config import validate_config, write_config_if_changed
from qcsbm_bench.stage_settings import STAGE_SCOPES, settings_path, write_stage_settings

# The toy config is the default only: files given with --configfile replace it rather than
# being merged onto it, so `qcsbm-bench config --config FILE` shows what the DAG runs.
if not workflow.config_settings.configfiles:

    configfile: "workflow/config/toy.yaml"


# Validate before any job: unknown keys and invalid values stop here, naming the key.
config.update(validate_config(config))

RESULTS = Path(config["results_dir"]) / config["name"]
# Every job reads the whole resolved config. Snakemake tracks each job's settings file
# instead: the keys its stage depends on, for its dataset and, where it matters, its variant
# or sampler (qcsbm_bench.stage_settings). A job reruns only when one of those changes, so
# a new seed or an evaluation setting leaves trained models alone.
RESOLVED_CONFIG = str(RESULTS / "config.yaml")
write_config_if_changed(config, RESOLVED_CONFIG)

KIND = config.get("kind", "toy")
SETTINGS_DIR = RESULTS / "settings"
# Stages whose rules read the config, and the wildcards their settings files are split by.
SETTINGS_SCOPES = STAGE_SCOPES[KIND]
write_stage_settings(config, SETTINGS_DIR, SETTINGS_SCOPES)


RUN_DIR = str(RESULTS / "runs" / "{dataset}" / "{variant}" / "seed-{seed}")
LOGS = str(RESULTS / "logs")
BENCHMARKS = str(RESULTS / "benchmarks")

# With `container: <image>` in the config (a .sif path or a docker:// URL), every job runs
# inside that image when Snakemake is started with --sdm apptainer.
if config["container"]:

    container: config["container"]


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    variant="csbm|usbm|qcsbm|usbm-ft",
    seed=r"\d+",
    sampler="pc|ode",
    shard=r"\d+",


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


if KIND == "toy":

    include: "workflow/rules/data.smk"
    include: "workflow/rules/train.smk"
    include: "workflow/rules/sample.smk"
    include: "workflow/rules/evaluate.smk"
    include: "workflow/rules/report.smk"

    rule all:
        default_target: True
        input:
            rules.figures.output,
            rules.aggregate.output,

else:

    include: "workflow/rules/image_common.smk"
    include: "workflow/rules/image_data.smk"
    include: "workflow/rules/image_train.smk"
    include: "workflow/rules/image_sample.smk"
    include: "workflow/rules/image_evaluate.smk"
    include: "workflow/rules/image_report.smk"

    rule all:
        default_target: True
        input:
            rules.image_figures.output,
            rules.image_aggregate.output,
