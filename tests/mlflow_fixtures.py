"""A real MLflow tracking + registry store (sqlite in a temp folder), filled through MlflowClient:
registered models, versions, training runs with params, metrics and dataset inputs, aliases.

Creating the sqlite schema takes MLflow ~10 s, so one empty store is made per test session and
copied for each test.
"""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import yaml

pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag  # noqa: E402

# offline metric of each registered version of "recsys" (version = index + 1)
VAL_AUC = (0.80, 0.83, 0.85)
START = dt.datetime(2025, 3, 1)


def client_for(db: Path) -> MlflowClient:
    uri = f"sqlite:///{db}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mlflow-template")
    db = folder / "mlruns.db"
    client_for(db).search_experiments()          # creates the schema
    return db


def training_version(client: MlflowClient, model: str, experiment_id: str, auc: float, layers: int,
                     artifacts: Path) -> str:
    """A training run (params, an offline metric, a training dataset) registered as a new version."""
    run = client.create_run(experiment_id, run_name=f"{model}-{layers}")
    rid = run.info.run_id
    client.log_param(rid, "layers", str(layers))
    client.log_metric(rid, "val_auc", auc)
    dataset = Dataset(name=f"clicks-{layers}", digest=f"digest{layers}", source_type="s3",
                      source=f"s3://bucket/clicks/{layers}")
    client.log_inputs(rid, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])
    client.set_terminated(rid)
    return client.create_model_version(model, source=str(artifacts / f"{model}-{layers}"), run_id=rid).version


def registry_store(folder: Path, empty: Path, models=("recsys",)) -> MlflowClient:
    """folder/mlruns.db with each model at versions 1..3 (val_auc from VAL_AUC), champion → 1,
    challenger → 2."""
    db = folder / "mlruns.db"
    shutil.copy(empty, db)
    client = client_for(db)
    exp = client.create_experiment("training", artifact_location=str(folder / "artifacts"))
    for model in models:
        client.create_registered_model(model, description=f"{model} ranking model")
        for i, auc in enumerate(VAL_AUC):
            training_version(client, model, exp, auc, i + 2, folder / "artifacts")
        client.set_registered_model_alias(model, "champion", "1")
        client.set_registered_model_alias(model, "challenger", "2")
    return client


def use_registry(root: Path, refs: dict[str, dict[str, str]], mlflow: dict | None = None) -> None:
    """Point experiments' variants at registry references in root/abproxy.yaml."""
    path = root / "abproxy.yaml"
    data = yaml.safe_load(path.read_text())
    for key, variants in refs.items():
        for name, ref in variants.items():
            data["experiments"][key]["variants"][name] = {"mlflow": ref}
    data["mlflow"] = {"tracking_uri": "sqlite:///mlruns.db", "retries": 0, **(mlflow or {})}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
