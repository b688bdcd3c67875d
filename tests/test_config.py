"""config.yaml and the JSON Schema: valid, and in step with the modules' defaults."""

import dataclasses

import pytest
import yaml
from conftest import REPO
from snakemake.utils import validate
from wormgnn.preprocess import PreprocessConfig
from wormgnn.simulate import SyntheticConfig

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def schema():
    return yaml.safe_load(SCHEMA.read_text())


def test_default_config_validates():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(config, str(SCHEMA))
    assert config["datasets"]["kato2015_wt_nostim"]["osf_api"] == "https://api.osf.io/v2"
    assert config["targets"]["datasets"] == ["kato2015_wt_nostim"]


@pytest.mark.parametrize(
    ("cls", "path"),
    [
        (PreprocessConfig, ("properties", "preprocess")),
        (SyntheticConfig, ("$defs", "synthetic")),
    ],
)
def test_schema_defaults_match_the_module_defaults(schema, cls, path):
    node = schema
    for key in path:
        node = node[key]
    schema_defaults = {k: v["default"] for k, v in node["properties"].items()}
    module_defaults = dataclasses.asdict(cls())
    assert schema_defaults == module_defaults


def test_schema_knows_every_model_and_training_setting(schema):
    from wormgnn.models.registry import MODEL_CONFIGS
    from wormgnn.train import TrainConfig

    models = schema["properties"]["models"]["properties"]
    assert set(models) == set(MODEL_CONFIGS)
    for name, cls in MODEL_CONFIGS.items():
        node = models[name]
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        keys = set(node["properties"]) - {"training", "search"}
        assert keys == {f.name for f in dataclasses.fields(cls)}, name
    training = set(schema["$defs"]["training"]["properties"])
    assert training == {f.name for f in dataclasses.fields(TrainConfig)}
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert set(config["training"]) == training  # config.yaml documents every setting
