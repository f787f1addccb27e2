"""Service settings: every knob comes from ``APPRANK_*`` environment variables (pydantic-settings).

The service and the CLIs (``apprank serve``, ``report``, ``export-training``, ``purge-events``, ``run``)
read them through ``ServiceSettings``; a CLI option, when given, overrides its setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,30}$")
# The defaults that library classes and CLIs share with the settings (written once, here).
DEFAULT_DATABASE_URL = "sqlite:///var/apprank.db"
DEFAULT_TABLE_PREFIX = "apprank_"
DEFAULT_EVENT_CLOCK_SKEW_S = 300.0


class ServiceSettings(BaseSettings):
    """What the ranking service needs to start.

    Attributes:
        models_dir: directory holding one model bundle per subdirectory; the subdirectory's name is the
            model name that experiment arms refer to.
        database_url: where experiments and their audit live (``sqlite:///...`` or ``postgresql://...``).
        table_prefix: prefix of the service's tables (lets several deployments or test runs share a DB).
        admin_token: ``token`` or ``name:token[,name:token]``; needed to change experiments or reload.
        max_candidates: largest candidate list accepted by ``POST /rank``.
        max_body_bytes: largest request body accepted (413 above it), after gzip decoding too.
        max_header_bytes: largest request line plus headers accepted (431 above it; ``apprank serve``).
        header_timeout_s: longest a client may take to send a request's headers (408 and close).
        body_timeout_s: longest a client may take to send a request's body, once its headers came.
        default_experiment: experiment used when a request names none.
        default_model: model served when no experiment applies (default: the first model by name).
        ort_device: ``auto`` uses CUDA when onnxruntime-gpu sees a GPU, else CPU.
        ort_intra_op_threads, ort_inter_op_threads: ONNX Runtime thread pools (1 suits one process per core).
        item_cache_size: apps per model and worker whose encoded item features are kept, so that a
            candidate seen before with the same features is not encoded again (``ItemCache``; 0: off).
        request_graph: serve a bundle through its request-shaped graphs when it has them (user and
            context work once per request, each app's item part cached); off: always ``model.onnx``.
        int8: serve the int8 request graph where the bundle kept one (on by default): the export keeps
            it only when its gate passed (test AUC, top-10 agreement, and the int8 head faster than the
            fp32 head where the export timed them); elsewhere, or when off, the fp32 request graph serves.
        sync_interval_s: how often each worker polls the store for experiment or model changes.
        experiments_file: optional JSON list of experiments created at start when absent from the store.
        event_log: build the event log (served lists, ``POST /events``, reports) into the app.
        event_writer: ``process``: /rank encodes each served list into a byte ring that a writer
            process stores (off the worker's GIL); ``thread``: a thread of the worker stores them.
        event_log_bytes: that ring's size per worker (in ``/dev/shm``, else the temporary directory):
            served lists that find it full are dropped and counted.
        event_retention_days: when set, served lists and events older than this are purged hourly.
        event_clock_skew_s: how far an event's time may precede its served list or follow the server's
            clock (300 s; simulations that back-date events to past days widen it).
        gil_switch_interval_s: ``sys.setswitchinterval`` of the worker. The served-list writer thread
            runs Python between its SQL steps; at the interpreter's 5 ms default the request thread
            waits up to that long for the GIL each time it comes back from the network or ONNX Runtime
            while a batch is written, which shows in /rank's tail latency (README, "Figures").
    """

    model_config = SettingsConfigDict(env_prefix="APPRANK_", extra="ignore")

    models_dir: Path = Path("models")
    database_url: str = DEFAULT_DATABASE_URL
    table_prefix: str = DEFAULT_TABLE_PREFIX
    admin_token: SecretStr | None = None
    max_candidates: Annotated[int, Field(ge=1, le=100_000)] = 2_000
    max_body_bytes: Annotated[int, Field(ge=1_024)] = 4 * 1024 * 1024
    max_header_bytes: Annotated[int, Field(ge=1_024)] = 32 * 1024
    header_timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 10.0
    body_timeout_s: Annotated[float, Field(gt=0.0, le=3600.0)] = 30.0
    default_experiment: str = "default"
    default_model: str | None = None
    ort_device: Literal["auto", "cpu", "cuda"] = "auto"
    ort_intra_op_threads: Annotated[int, Field(ge=0, le=256)] = 1
    ort_inter_op_threads: Annotated[int, Field(ge=0, le=256)] = 1
    item_cache_size: Annotated[int, Field(ge=0, le=10_000_000)] = 50_000
    request_graph: bool = True
    int8: bool = True
    sync_interval_s: Annotated[float, Field(gt=0.0, le=60.0)] = 0.5
    experiments_file: Path | None = None
    event_log: bool = True
    event_writer: Literal["process", "thread"] = "process"
    event_log_bytes: Annotated[int, Field(ge=64 * 1024, le=1 << 34)] = 16 * 1024 * 1024
    event_retention_days: Annotated[int, Field(ge=1)] | None = None
    event_clock_skew_s: Annotated[float, Field(ge=0.0)] = DEFAULT_EVENT_CLOCK_SKEW_S
    gil_switch_interval_s: Annotated[float, Field(ge=0.0001, le=0.1)] = 0.001

    @field_validator("table_prefix")
    @classmethod
    def _identifier_prefix(cls, value: str) -> str:
        if not _PREFIX.match(value):
            raise ValueError("table_prefix must be lower-case letters, digits and _ (at most 31)")
        return value
