def stage_resources(stage):
    """Return the threads, mem_mb, runtime and gpu that the config sets for a stage."""
    return config["resources"][stage]
