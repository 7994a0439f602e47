def stage_resources(stage):
    """Return the threads, mem_mb, runtime and gpu that the config sets for a stage."""
    return config["resources"][stage]


def stage_settings(stage):
    """Return the settings file pattern that a stage's jobs depend on, with wildcards."""
    scope = {name: "{" + name + "}" for name in SETTINGS_SCOPES[stage]}
    return str(settings_path(SETTINGS_DIR, stage, **scope))


def job_settings(stage, wildcards):
    """Return the settings file of one job of a stage, from the job's wildcards."""
    scope = {name: getattr(wildcards, name) for name in SETTINGS_SCOPES[stage]}
    return str(settings_path(SETTINGS_DIR, stage, **scope))
