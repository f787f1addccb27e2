"""The baseline of the serving bench: the ranking service a user would write by hand over the same bundle.

FastAPI with pydantic models for the body and the answer, ONNX Runtime on the bundle's plain graph
(``model.onnx``, one intra-op thread, like the service), and the bundle's own ``FeatureEncoder`` run on
the request's columns (user and context values repeated for every candidate, one column per item
field): a straightforward, reasonable implementation, with none of apprank's serving work (no
request-shaped graph, no item cache, no fast parser, no A/B routing, no logging).

    .venv/bin/python bench/handwritten_service.py --bundle /tmp/models/deepfm --port 8100 --workers 2
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel, Field

from model.bundle import read_bundle
from model.schema import Source

BUNDLE_ENV = "HANDWRITTEN_BUNDLE"
Value = str | int | float | bool | None


class Candidate(BaseModel):
    app_id: str
    bid: float | None = None
    features: dict[str, Value] = {}


class RankBody(BaseModel):
    user_id: str
    user: dict[str, Value] = {}
    context: dict[str, Value] = {}
    candidates: list[Candidate] = Field(min_length=1, max_length=5000)
    top_k: int | None = Field(default=None, ge=1)


class Item(BaseModel):
    app_id: str
    ctr: float
    position: int


class RankAnswer(BaseModel):
    items: list[Item]


def create_app(bundle_dir: Path) -> FastAPI:
    """The service over one bundle."""
    bundle = read_bundle(bundle_dir)
    encoder = bundle.encoder
    schema = encoder.schema
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(bundle.onnx_path), options, providers=["CPUExecutionProvider"])
    users = [f.name for f in schema.by_source(Source.USER)]
    contexts = [f.name for f in schema.by_source(Source.CONTEXT)]
    items = [f.name for f in schema.by_source(Source.ITEM)]
    app = FastAPI()

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/rank")
    async def rank(body: RankBody) -> RankAnswer:
        n = len(body.candidates)
        columns: dict[str, Any] = {}
        for name in users:
            value = body.user.get(name)
            if value is None and name == schema.user_id_field:
                value = body.user_id
            columns[name] = np.full(n, value, object)
        for name in contexts:
            columns[name] = np.full(n, body.context.get(name), object)
        for name in items:
            default = name == schema.item_id_field
            columns[name] = np.array(
                [c.features.get(name, c.app_id if default else None) for c in body.candidates], object
            )
        inputs = encoder.transform(columns, n)
        ctr = session.run(["ctr"], inputs)[0]
        k = min(body.top_k or n, n)
        order = np.argsort(-ctr, kind="stable")[:k]
        return RankAnswer(
            items=[
                Item(app_id=body.candidates[i].app_id, ctr=float(ctr[i]), position=p + 1)
                for p, i in enumerate(order.tolist())
            ]
        )

    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers: the bundle from ``HANDWRITTEN_BUNDLE``."""
    return create_app(Path(os.environ[BUNDLE_ENV]))


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ[BUNDLE_ENV] = str(args.bundle)
    uvicorn.run(
        "handwritten_service:app_from_env",
        factory=True,
        port=args.port,
        workers=args.workers,
        http="httptools",
        access_log=False,
        log_level="warning",
        app_dir=str(Path(__file__).parent),
    )


if __name__ == "__main__":
    main()
