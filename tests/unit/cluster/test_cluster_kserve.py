"""``isnetflow.cluster.kserve``: from a registry URI to the InferenceService that serves that version."""

from __future__ import annotations

import mlflow
import pytest
import yaml
from typer.testing import CliRunner

from isnetflow.cli import app
from isnetflow.cluster.kserve import (
    PREDICTOR_LABELS,
    ModelLocation,
    inference_service,
    resolve_model,
    storage_uri,
)
from isnetflow.cluster.names import PREDICTOR_ACCOUNT, SERVING_RUNTIME
from tests._models import register_small_classifier

NAME = "cxr-kserve-unit"


@pytest.fixture(scope="module")
def registered() -> str:
    """Two versions of a small packaged classifier; the second is the champion."""
    mlflow.set_experiment("kserve-unit")
    register_small_classifier(NAME, size=32, seed=0, alias=None)
    return register_small_classifier(NAME, size=32, seed=1)


def test_an_alias_resolves_to_its_version_and_artifacts(registered: str) -> None:
    loc = resolve_model(f"models:/{NAME}@champion")
    assert (loc.name, loc.version, loc.alias) == (NAME, registered, "champion")
    mv = mlflow.MlflowClient().get_model_version(NAME, registered)
    assert loc.run_id == mv.run_id
    assert loc.artifact_uri == mlflow.MlflowClient().get_model_version_download_uri(NAME, registered)
    first = resolve_model(f"models:/{NAME}/1")
    assert (first.version, first.alias) == ("1", None) and first.artifact_uri != loc.artifact_uri


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/x", "models:/x/latest", "s3://b/m"])
def test_only_registry_uris_are_accepted(uri: str) -> None:
    with pytest.raises(ValueError, match="expected models:/<name>@<alias> or models:/<name>/<version>"):
        resolve_model(uri)


def test_storage_locations() -> None:
    assert storage_uri("s3://bucket/1/models/m-1/artifacts") == "s3://bucket/1/models/m-1/artifacts"
    assert storage_uri("gs://b/x") == "gs://b/x"
    # the MLflow server's artifact proxy: the bucket location is the server's --artifacts-destination + path
    assert (
        storage_uri("mlflow-artifacts:/1/models/m-1/artifacts", "s3://mlflow-artifacts/")
        == "s3://mlflow-artifacts/1/models/m-1/artifacts"
    )
    assert (
        storage_uri("mlflow-artifacts://mlflow.isnetflow:5000/2/abc/artifacts/model", "s3://b/root")
        == "s3://b/root/2/abc/artifacts/model"
    )
    with pytest.raises(ValueError, match="give its --artifacts-destination"):
        storage_uri("mlflow-artifacts:/1/models/m-1/artifacts")
    for local in ("file:///srv/mlartifacts/1/m", "/srv/mlartifacts/1/m"):
        with pytest.raises(ValueError, match="which a cluster cannot read"):
            storage_uri(local)


def test_the_manifest_pins_the_version() -> None:
    loc = ModelLocation("cxr-isnet", "7", "champion", "r" * 32, "mlflow-artifacts:/1/m")
    doc = inference_service(loc, "s3://b/1/m", name="cxr", namespace="radiology", cpu="1", memory="3Gi")
    assert doc["metadata"]["name"] == "cxr" and doc["metadata"]["namespace"] == "radiology"
    assert doc["metadata"]["annotations"]["isnetflow.io/model-version"] == "7"
    assert doc["metadata"]["annotations"]["isnetflow.io/run-id"] == "r" * 32
    predictor = doc["spec"]["predictor"]
    assert predictor["serviceAccountName"] == PREDICTOR_ACCOUNT and predictor["labels"] == PREDICTOR_LABELS
    model = predictor["model"]
    assert model["runtime"] == SERVING_RUNTIME and model["storageUri"] == "s3://b/1/m"
    assert model["resources"] == {
        "requests": {"cpu": "1", "memory": "3Gi"},
        "limits": {"cpu": "1", "memory": "3Gi"},
    }
    no_alias = inference_service(ModelLocation("m", "2", None, None, "s3://b"), "s3://b")
    assert "isnetflow.io/model-alias" not in no_alias["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "CXR_isnet"}, "DNS label"),
        ({"name": "x" * 46}, "DNS label"),
        ({"min_replicas": 3, "max_replicas": 2}, "replicas"),
        ({"min_replicas": 0}, "replicas"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        inference_service(ModelLocation("m", "1", None, None, "s3://b"), "s3://b", **kwargs)  # type: ignore[arg-type]


def test_cli_refuses_a_local_store_with_one_line(registered: str) -> None:
    """The unit tests' registry is a SQLite store with local artifacts: no cluster could read them."""
    result = CliRunner().invoke(
        app,
        [
            "registry",
            "kserve",
            "--model",
            f"models:/{NAME}@champion",
            "--tracking-uri",
            mlflow.get_tracking_uri(),
        ],
    )
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: models:/{NAME}@champion: ") and "which a cluster cannot read" in line
    result = CliRunner().invoke(
        app,
        [
            "registry",
            "kserve",
            "--model",
            "models:/no-such-model@champion",
            "--tracking-uri",
            mlflow.get_tracking_uri(),
        ],
    )
    assert (
        result.exit_code == 2
        and "no-such-model" in result.stderr
        and len(result.stderr.strip().splitlines()) == 1
    )


def test_cli_prints_the_manifest(registered: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the store's artifacts behind an S3 location (as on a cluster), the YAML is the manifest."""
    from isnetflow.cluster import kserve

    real = kserve.resolve_model

    def in_s3(uri: str, client: object = None) -> ModelLocation:
        loc = real(uri)
        return ModelLocation(
            loc.name, loc.version, loc.alias, loc.run_id, "mlflow-artifacts:/1/models/m-9/artifacts"
        )

    monkeypatch.setattr(kserve, "resolve_model", in_s3)
    result = CliRunner().invoke(
        app,
        ["registry", "kserve", "--model", f"models:/{NAME}@champion",
         "--tracking-uri", mlflow.get_tracking_uri(),
         "--artifacts-destination", "s3://mlflow-artifacts", "--name", "cxr-test", "--max-replicas", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout)
    assert doc["kind"] == "InferenceService" and doc["metadata"]["name"] == "cxr-test"
    assert doc["spec"]["predictor"]["model"]["storageUri"] == "s3://mlflow-artifacts/1/models/m-9/artifacts"
    assert doc["spec"]["predictor"]["maxReplicas"] == 4
    assert doc["metadata"]["annotations"]["isnetflow.io/model-version"] == registered
