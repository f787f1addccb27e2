"""``apprank serve``: the ranking service under uvicorn (registered by ``apprank.cli``)."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # serving dependencies (uvicorn, pydantic-settings): imported when serving only
    from service.http_protocol import LimitedHttpToolsProtocol
    from service.settings import ServiceSettings


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``apprank`` CLI."""

    @app.command()
    def serve(
        models: Annotated[Path, typer.Option("--models", help="directory with one bundle per subdirectory")],
        host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8000,
        workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes (one per core)")] = 1,
        metrics_dir: Annotated[
            Path | None, typer.Option(help="PROMETHEUS_MULTIPROC_DIR with several workers (wiped at start)")
        ] = None,
    ) -> None:
        """Serve POST /rank over the bundles in MODELS (settings: APPRANK_* environment variables)."""
        import uvicorn

        from service.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
        from service.settings import ServiceSettings

        os.environ["APPRANK_MODELS_DIR"] = str(models)
        if workers > 1 or metrics_dir is not None or os.environ.get(MULTIPROC_ENV):
            default = Path(tempfile.gettempdir()) / f"apprank-metrics-{port}"
            prepare_multiprocess_dir(metrics_dir or Path(os.environ.get(MULTIPROC_ENV) or default))
        uvicorn.run(**uvicorn_options(ServiceSettings(), host, port, workers))


def uvicorn_options(settings: ServiceSettings, host: str, port: int, workers: int) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` for ``apprank serve`` (``apprank run`` execs it, and
    benches start it): the app factory, httptools with the limits of ``settings``, no access log."""
    return {
        "app": "service.app:app_from_env",
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "access_log": False,
        "log_level": "info",
        "loop": "auto",
        "http": http_protocol(settings),  # a protocol factory, as uvicorn calls it
        "timeout_keep_alive": 5,
    }


def http_protocol(settings: ServiceSettings) -> functools.partial[LimitedHttpToolsProtocol]:
    """uvicorn's httptools protocol with the header limit and read timeouts of ``settings``."""
    from service.http_protocol import HttpLimits, LimitedHttpToolsProtocol

    limits = HttpLimits(settings.max_header_bytes, settings.header_timeout_s, settings.body_timeout_s)
    return functools.partial(LimitedHttpToolsProtocol, limits=limits)
