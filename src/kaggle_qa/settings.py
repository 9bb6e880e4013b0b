"""Kedro project settings."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from kaggle_qa.hooks import TrackingHook

# kedro-mlflow registers its own hook (one MLflow run per `kedro run`); this one fills that run
# from the catalog as conf/base/tracking.yml says (docs/tracking.md)
HOOKS = (TrackingHook(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # one catalog_<pipeline>.yml and parameters_<pipeline>.yml per pipeline
    "config_patterns": {
        "catalog": ["catalog*", "catalog*/**", "**/catalog*"],
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "credentials": ["credentials*", "credentials*/**", "**/credentials*"],
        "tracking": ["tracking*", "tracking*/**"],
    },
    # ${oc.env:NAME,default} in any config file (conf/base/mlflow.yml: MLFLOW_TRACKING_URI)
    "custom_resolvers": {"oc.env": oc.env},
    # an environment (conf/gpu, conf/live, …) overrides only the keys it names
    "merge_strategy": {"parameters": "soft"},
}
