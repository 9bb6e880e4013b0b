"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # one catalog_<pipeline>.yml and parameters_<pipeline>.yml per pipeline
    "config_patterns": {
        "catalog": ["catalog*", "catalog*/**", "**/catalog*"],
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "credentials": ["credentials*", "credentials*/**", "**/credentials*"],
    },
    # an environment (conf/gpu, conf/live, …) overrides only the keys it names
    "merge_strategy": {"parameters": "soft"},
}
