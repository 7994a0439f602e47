# Settings and input functions shared by the image rules (included when kind is images).
from snakemake.logging import logger

from qcsbm_bench.image_config import feature_space, finetuned_from_usbm, n_samples_for

IMAGE_DATA = str(RESULTS / "data" / "{dataset}")
INCEPTION_WEIGHTS = Path(config["evaluate"]["fid"]["inception_weights"])
if not INCEPTION_WEIGHTS.is_file() and any(
    feature_space(config, dataset) == "inception" for dataset in config["datasets"]
):
    # Warn now rather than fail: training runs for days before the first FID job needs it.
    logger.warning(
        f"Inception weights not found at {INCEPTION_WEIGHTS}; the FID jobs will fail until "
        "inception-2015-12-05.pt from https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/"
        "pretrained/metrics/inception-2015-12-05.pt is there (config key "
        "evaluate.fid.inception_weights)."
    )


def image_data_dir(wildcards, input):
    return str(Path(input.data).parent)


def reference_inputs(wildcards):
    inputs = {
        "settings": job_settings("reference", wildcards),
        "data": f"{RESULTS}/data/{wildcards.dataset}/meta.json",
    }
    if feature_space(config, wildcards.dataset) == "classifier":
        inputs["classifier"] = f"{RESULTS}/data/{wildcards.dataset}/classifier.pt"
    return inputs


def image_train_inputs(wildcards):
    inputs = {
        "settings": job_settings("train", wildcards),
        "data": f"{RESULTS}/data/{wildcards.dataset}/meta.json",
    }
    if finetuned_from_usbm(config, wildcards.variant):
        # The paper's protocol: QCSBM (and optionally CSBM) continue from the USBM run.
        inputs["init"] = (
            f"{RESULTS}/runs/{wildcards.dataset}/usbm/seed-{wildcards.seed}/checkpoint.pt"
        )
    return inputs


def sample_quality_inputs(wildcards):
    data_dir = f"{RESULTS}/data/{wildcards.dataset}"
    inputs = {
        "settings": job_settings("sample_quality", wildcards),
        "samples": f"{RESULTS}/runs/{wildcards.dataset}/{wildcards.variant}/"
        f"seed-{wildcards.seed}/samples-{wildcards.sampler}.npz",
        "reference": f"{data_dir}/reference.npz",
    }
    if feature_space(config, wildcards.dataset) == "classifier":
        inputs["classifier"] = f"{data_dir}/classifier.pt"
    return inputs
