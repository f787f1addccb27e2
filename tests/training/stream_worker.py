"""One rank of the 2-process streaming test, run by torchrun: ``python -m tests.training.stream_worker
PREPARED OUT``. Trains on the prepared dataset, evaluates the test split (split over the ranks and
gathered), and writes what it read and what it got to ``OUT/rank-<r>.json`` (rank 0 also the weights)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from model.nets import build_model
from tests.training.stream_support import small_config
from training.distributed import init_distributed, shutdown
from training.sources import open_stream
from training.trainer import Trainer, evaluate


def main(prepared: Path, out: Path) -> None:
    config = small_config("prepare.row_group_rows=1024", "batch_size=256")
    context = init_distributed(torch.device("cpu"))
    assert context is not None, "run under torchrun"
    stream = open_stream(prepared, config, context)
    torch.manual_seed(config.seed)
    model = build_model(config.model, stream.encoder.layout, config.params)
    history = Trainer(model, config, context=context).fit(stream.train, stream.valid)
    test = evaluate(model, stream.test or stream.valid, config.eval_batch_size, None, context)
    report = {
        "rank": context.rank,
        "steps": stream.train.steps,
        "train_reads": [{"row_groups": s.row_groups, "rows": s.rows} for s in stream.train.stats],
        "test_rows_read": sum(s.rows for s in (stream.test or stream.valid).stats),
        "test": test,
        "epochs": len(history.epochs),
        "param_sum": float(sum(p.double().sum() for p in model.parameters())),
    }
    (out / f"rank-{context.rank}.json").write_text(json.dumps(report))
    if context.is_main:
        torch.save(model.state_dict(), out / "weights.pt")
    shutdown(context)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
