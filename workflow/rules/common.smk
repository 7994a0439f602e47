def stage_resources(stage):
    """Return the threads, mem_mb, runtime and gpu that the config sets for a stage."""
    return config["resources"][stage]


def stage_settings(stage):
    """Return the settings file that a stage's jobs depend on (per dataset where they run so)."""
    dataset = "{dataset}" if SETTINGS_STAGES[stage] else None
    return str(settings_path(SETTINGS_DIR, stage, dataset))
