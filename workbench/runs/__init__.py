"""Runs: the record, the store, logging from notebooks, and the notebook executor."""
from .log import artifact_path, log_results, log_variant, run_dir
from .parameters import ParameterError, read_parameters
from .record import SCHEMA_VERSION, RecordError, RunRecord
from .store import CorruptRecord, RunStore, StoreError

__all__ = ["RunRecord", "RunStore", "CorruptRecord", "StoreError", "RecordError",
           "ParameterError", "SCHEMA_VERSION", "log_results", "log_variant", "artifact_path", "run_dir",
           "read_parameters"]
