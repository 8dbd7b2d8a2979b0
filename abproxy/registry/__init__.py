"""The MLflow model registry: variants name registered versions (`models:/name/3`, `models:/name@alias`);
each run resolves and records their lineage (`resolve`), then writes the verdict back as version
tags and, optionally, promotes the shipped version with an alias (`writeback`).

MLflow is an optional dependency (`pip install 'abproxy[mlflow]'`), imported only in `client`.
"""
from .client import MlflowMissing, Registry, RegistryUnavailable, require_client
from .resolve import Resolution, resolve
from .writeback import WriteRecord, write_back

__all__ = ["MlflowMissing", "Registry", "RegistryUnavailable", "Resolution", "WriteRecord", "require_client",
           "resolve", "write_back"]
