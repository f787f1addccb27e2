"""The serving bench, in the shipped defaults: ``apprank serve`` (served-list logging on) against the bare
ONNX call and a hand-written FastAPI + pydantic + ONNX Runtime service over the same bundle.

In one run, on the DeepFM-D bundle of ``bench/train_frappe.py`` (trained here, with the same command,
when ``--models`` holds none), with real frappe_ctr bodies (one user and context, N distinct apps with
their features):

* ``apprank``: ``apprank serve`` as ``apprank run`` starts it (``bench/service_process.py``), every
  setting at its default: served-list logging on (SQLite), request-shaped graphs, item cache;
* ``apprank, log off``: the same with ``APPRANK_EVENT_LOG=false`` (what logging costs);
* ``handwritten``: ``bench/handwritten_service.py`` (the plain graph, pydantic, the bundle's encoder);
* ``bare onnx``: ``session.run`` of the plain graph (``model.onnx``, fp32, one thread) alone, in this
  process, on the encoded batch of the same body: the model as served before request graphs.

For N = 100 and 1,000, top 10 and all returned, 1 and 2 workers: p50 / p99 at one connection (wrk,
one thread; each process warmed first), JSON bodies; at N = 1,000 also MessagePack bodies and answers;
and requests/s with 2 workers at N = 100, top 10 (``--connections``, wrk with 2 threads). The three
services of one worker count run side by side and are measured in ``--rounds`` interleaved rounds (the
bare ONNX call too); each figure is the median over the rounds, so that a shared machine's load
weighs on every system alike (the per-round figures are in the JSON). wrk posts the
same body again and again, so from the second request on every candidate is an item-cache hit (an
app store's steady state; ``--item-cache-size 0`` measures the other extreme).

Then the targets of issue 14 are checked and printed (PASS / MISS).

    flock /tmp/bench.lock nice .venv/bin/python bench/serve_bench.py --models /tmp/models \\
        --out bench/results/serve.json

Uses ``wrk`` when installed (``apt-get install -y wrk``), else a Python load generator
(``bench/load_client.py``, costlier per request: its figures are not wrk's).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from load_client import load  # noqa: E402
from service_process import free_port, start_process, start_service, stop_service  # noqa: E402

from model.bundle import read_bundle  # noqa: E402
from model.schema import Source  # noqa: E402

log = logging.getLogger("serve_bench")
console = Console()
DATA = Path(os.environ.get("APPRANK_DATA_DIR", REPO.parent / "shared" / "data")) / "frappe_ctr"
DEFAULT_MODELS = REPO / "bench" / "results" / "serve-models"
JSON_MEDIA = "application/json"
MSGPACK_MEDIA = "application/msgpack"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{media}"
wrk.headers["Accept"] = "{media}"
local f = io.open("{body}", "rb"); wrk.body = f:read("*all"); f:close()
local errors = 0
response = function(status, headers, body) if status ~= 200 then errors = errors + 1 end end
done = function(summary, latency, requests)
  local out = io.open("{out}", "w")
  out:write(string.format('{{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": %d, "socket_errors": %d}}', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), summary.errors.status + errors, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
  out:close()
end
"""


@dataclass(frozen=True)
class Case:
    """One body: N candidates, top 10 or all returned, JSON or MessagePack (body and answer)."""

    n: int
    top_k: int | None
    media: str = JSON_MEDIA

    @property
    def label(self) -> str:
        wire = "msgpack" if self.media == MSGPACK_MEDIA else "json"
        return f"N={self.n} {'top10' if self.top_k else 'all'} {wire}"


def read_rows(path: Path, limit: int = 20_000) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [row for _, row in zip(range(limit), csv.DictReader(handle), strict=False)]


def payload(rows: list[dict[str, str]], bundle_dir: Path, n: int, top_k: int | None = None) -> bytes:
    """One user and context from the first row, N distinct apps (with their features) from the rows."""
    schema = read_bundle(bundle_dir).schema
    first = rows[0]
    items = [f.name for f in schema.by_source(Source.ITEM) if f.name != schema.item_id_field]
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        app = row[schema.item_id_field or "item"]
        if app not in seen:
            seen[app] = {"app_id": app, "bid": 1.0 + len(seen) % 7, "features": {k: row[k] for k in items}}
        if len(seen) == n:
            break
    body: dict[str, Any] = {
        "user_id": first.get(schema.user_id_field or "user", "u"),
        "context": {f.name: first[f.name] for f in schema.by_source(Source.CONTEXT)},
        "candidates": list(seen.values()),
    }
    if top_k is not None:
        body["top_k"] = top_k
    return orjson.dumps(body)


def encoded_body(body: bytes, media: str) -> bytes:
    return msgspec.msgpack.encode(orjson.loads(body)) if media == MSGPACK_MEDIA else body


def bare_onnx(bundle_dir: Path, body: bytes, repeats: int) -> dict[str, float]:
    """p50 / p99 of ``session.run`` alone on the encoded batch of ``body``: the plain graph, fp32, one
    thread (the service's session options)."""
    from service.rank.payload import parse_rank_request
    from service.rank.registry import LoadOptions, load_model

    model = load_model(bundle_dir.name, bundle_dir, LoadOptions("cpu", 1, 1))
    assert model.graph == "plain"
    inputs = model.encoder.encode(parse_rank_request(body, 100_000))
    for _ in range(100):
        model.run(inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.run(inputs)
        times.append(time.perf_counter() - started)
    return {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3)}


def wrk(
    url: str, body: Path, media: str, work: Path, connections: int, threads: int, seconds: int
) -> dict[str, float]:
    """One wrk run posting ``body`` to /rank; latency figures in ms."""
    out = work / f"wrk-{connections}-{time.monotonic_ns()}.json"
    script = work / f"post-{time.monotonic_ns()}.lua"
    script.write_text(LUA.format(body=body, out=out, media=media))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script), f"{url}/rank"]
    subprocess.run(command, check=True, capture_output=True)
    result = json.loads(out.read_text())
    return {
        "rps": result["requests"] / (result["duration_us"] / 1e6),
        "p50_ms": result["p50_us"] / 1e3,
        "p99_ms": result["p99_us"] / 1e3,
        "errors": result["errors"] + result["socket_errors"],
    }


def drive(url: str, body: Path, media: str, work: Path, connections: int, seconds: int) -> dict[str, float]:
    """Latency and throughput of /rank under ``connections`` connections: wrk, or the Python client."""
    if shutil.which("wrk") is not None:
        return wrk(url, body, media, work, connections, 1 if connections == 1 else 2, seconds)
    return load(url, body.read_bytes(), media, connections, seconds)


def ensure_bundle(models: Path | None, data: Path) -> Path:
    """The models directory: ``--models``, or DeepFM-D trained on frappe_ctr as train_frappe.py does."""
    if models is not None and any(p.is_dir() and not p.name.startswith(".") for p in models.iterdir()):
        return models
    target = models or DEFAULT_MODELS
    if not (target / "deepfm" / "manifest.json").is_file():
        from train_frappe import train

        console.print(f"training DeepFM-D on frappe_ctr into {target / 'deepfm'} (a few minutes)")
        train("deepfm", target / "deepfm", [], data=data)
    return target


class Servers:
    """Starts the services of one configuration and measures its cases."""

    def __init__(self, args: argparse.Namespace, models: Path, bundle: Path, work: Path) -> None:
        self.args, self.models, self.bundle, self.work = args, models, bundle, work

    def apprank(self, workers: int, logging_on: bool) -> tuple[subprocess.Popen[bytes], str]:
        settings = {
            "APPRANK_MODELS_DIR": str(self.models),
            "APPRANK_DATABASE_URL": f"sqlite:///{self.work}/bench-{free_port()}.db",
            "APPRANK_MAX_CANDIDATES": "5000",
            "APPRANK_DEFAULT_MODEL": self.bundle.name,
            "APPRANK_EVENT_LOG": str(logging_on).lower(),
        }
        if self.args.item_cache_size is not None:
            settings["APPRANK_ITEM_CACHE_SIZE"] = str(self.args.item_cache_size)
        return start_service(settings, workers, log=self.work / "apprank.log")

    def handwritten(self, workers: int) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        command = [
            sys.executable,
            str(REPO / "bench" / "handwritten_service.py"),
            "--bundle",
            str(self.bundle),
        ]
        command += ["--port", str(port), "--workers", str(workers)]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        return start_process(command, env, port, self.work / "handwritten.log")


SYSTEMS = ("apprank", "apprank, log off", "handwritten")


def median_of(figures: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over rounds (errors: the sum)."""
    out = {key: float(np.median([f[key] for f in figures])) for key in figures[0]}
    if "errors" in out:
        out["errors"] = float(sum(f["errors"] for f in figures))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every system of one worker count runs side by side (idle but one); the cases are measured in
    ``--rounds`` interleaved rounds and each figure is the median over the rounds, so that a shared,
    noisy machine slows every system alike."""
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    models = ensure_bundle(args.models, args.data)
    dirs = [p for p in sorted(models.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    bundle = next(p for p in dirs if args.model in (None, p.name))
    rows = read_rows(args.data / "test.csv")
    cases = [Case(n, k) for n in args.candidates for k in (10, None)]
    cases += [Case(n, k, MSGPACK_MEDIA) for n in args.candidates if n >= 1000 for k in (10, None)]
    bodies = {}
    for case in cases:
        bodies[case] = work / f"body-{case.n}-{case.top_k}-{case.media.split('/')[1]}"
        bodies[case].write_bytes(encoded_body(payload(rows, bundle, case.n, case.top_k), case.media))
    plain = {n: payload(rows, bundle, n) for n in args.candidates}
    onnx_rounds: dict[int, list[dict[str, float]]] = {n: [] for n in args.candidates}
    servers = Servers(args, models, bundle, work)
    rounds: dict[tuple[str, int, Case], list[dict[str, float]]] = {}
    loaded: dict[str, list[dict[str, float]]] = {}
    rps_case = Case(100, 10) if 100 in args.candidates else cases[0]
    for workers in args.workers:
        running = {
            "apprank": servers.apprank(workers, True),
            "apprank, log off": servers.apprank(workers, False),
            "handwritten": servers.handwritten(workers),
        }
        try:
            for system, (_, url) in running.items():
                for case in _cases_of(system, cases):
                    drive(url, bodies[case], case.media, work, 1, 1)  # warm-up: every worker, every cache
            for round_ in range(args.rounds):
                for n in args.candidates:
                    onnx_rounds[n].append(bare_onnx(bundle, plain[n], max(args.repeats // args.rounds, 50)))
                for case in cases:
                    for system, (_, url) in running.items():
                        if case in _cases_of(system, cases):
                            figure = drive(url, bodies[case], case.media, work, 1, args.seconds)
                            rounds.setdefault((system, workers, case), []).append(figure)
                            log.info(
                                "round %d, %s, %d workers, %s: %s",
                                round_,
                                system,
                                workers,
                                case.label,
                                figure,
                            )
                    if workers == 2 and case == rps_case:
                        for system, (_, url) in running.items():
                            figure = drive(
                                url, bodies[case], JSON_MEDIA, work, args.connections, args.seconds
                            )
                            loaded.setdefault(system, []).append(figure)
                            log.info(
                                "round %d, %s, 2 workers, %d connections: %s",
                                round_,
                                system,
                                args.connections,
                                figure,
                            )
        finally:
            for server, _ in running.values():
                stop_service(server)
    shutil.rmtree(work, ignore_errors=True)
    onnx = {n: median_of(figures) for n, figures in onnx_rounds.items() if figures}
    rows_out = [
        {
            "system": system,
            "workers": workers,
            **asdict(case),
            "label": case.label,
            "onnx_p50_ms": onnx[case.n]["p50_ms"],
            **median_of(figures),
            "rounds": figures,
        }
        for (system, workers, case), figures in rounds.items()
    ]
    rows_out.sort(
        key=lambda r: (SYSTEMS.index(r["system"]), r["workers"], r["media"], r["n"], r["top_k"] is None)
    )
    serving = read_bundle(bundle).manifest.serving
    return {
        "bundle": str(bundle),
        "graphs": None if serving is None else serving.model_dump(mode="json", include={"graph", "int8"}),
        "onnx": {str(n): v for n, v in onnx.items()},
        "rows": rows_out,
        "throughput": {system: median_of(figures) for system, figures in loaded.items()},
        "rps_case": rps_case.label,
    }


def _cases_of(system: str, cases: list[Case]) -> list[Case]:
    """The hand-written service takes JSON only."""
    return [c for c in cases if c.media == JSON_MEDIA] if system == "handwritten" else cases


def find(
    results: dict[str, Any], system: str, n: int, top_k: int | None, workers: int = 1, media: str = JSON_MEDIA
) -> dict[str, Any] | None:
    wanted = (system, n, top_k, workers, media)
    rows: list[dict[str, Any]] = results["rows"]
    return next(
        (r for r in rows if (r["system"], r["n"], r["top_k"], r["workers"], r["media"]) == wanted), None
    )


def verdicts(results: dict[str, Any], connections: int) -> list[tuple[str, bool | None, str]]:
    """The targets of issue 14: (what, met (None: not measured), the figures)."""
    out: list[tuple[str, bool | None, str]] = []
    big, hand = find(results, "apprank", 1000, 10), find(results, "handwritten", 1000, 10)
    onnx = results["onnx"].get("1000")
    if big and onnx:
        out.append(
            (
                "N=1,000 top 10: p50 < bare fp32 plain ONNX call",
                big["p50_ms"] < onnx["p50_ms"],
                f"{big['p50_ms']:.2f} ms vs {onnx['p50_ms']:.2f} ms",
            )
        )
    if big and hand:
        ratio = big["p50_ms"] / hand["p50_ms"]
        out.append(
            (
                "N=1,000 top 10: p50 <= 0.35x hand-written",
                ratio <= 0.35,
                f"{big['p50_ms']:.2f} / {hand['p50_ms']:.2f} ms = {ratio:.2f}x",
            )
        )
    small = find(results, "apprank", 100, 10)
    if small:
        out.append(("N=100 top 10: p50 <= 0.5 ms", small["p50_ms"] <= 0.5, f"{small['p50_ms']:.2f} ms"))
    for row in results["rows"]:
        if row["system"] == "apprank" and row["workers"] == 1:
            ok = row["p99_ms"] <= 2 * row["p50_ms"]
            out.append(
                (
                    f"{row['label']}: p99 <= 2x p50 (log on)",
                    ok,
                    f"{row['p99_ms']:.2f} vs {row['p50_ms']:.2f} ms",
                )
            )
    for n in (100, 1000):
        on, off = find(results, "apprank", n, 10), find(results, "apprank, log off", n, 10)
        if on and off:
            d50, d99 = on["p50_ms"] - off["p50_ms"], on["p99_ms"] - off["p99_ms"]
            out.append(
                (
                    f"N={n:,} top 10: logging adds <= 0.1 ms p50, <= 0.3 ms p99",
                    d50 <= 0.1 and d99 <= 0.3,
                    f"{d50:+.3f} ms p50, {d99:+.3f} ms p99",
                )
            )
    loaded = results["throughput"].get("apprank")
    if loaded:
        out.append(
            (
                f"{results['rps_case']}: >= 2,500 req/s, 2 workers ({connections} connections)",
                loaded["rps"] >= 2500,
                f"{loaded['rps']:.0f} req/s",
            )
        )
    return out


def show(results: dict[str, Any], connections: int) -> None:
    graphs = results.get("graphs") or {}
    int8 = graphs.get("int8") or {}
    serves = "int8 request graph" if int8.get("usable") else f"{graphs.get('graph', 'plain')} graph, fp32"
    console.print(f"the bundle serves its {serves} by default (int8 gate: {int8.get('reason', 'none')})")
    table = Table(title="POST /rank at one connection (p50 / p99 ms); the bare plain-graph ONNX call beside")
    for column in ("system", "workers", "case", "p50", "p99", "bare onnx p50", "err"):
        table.add_column(column, justify="right")
    for r in results["rows"]:
        table.add_row(
            r["system"],
            str(r["workers"]),
            r["label"],
            f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['onnx_p50_ms']:.3f}",
            str(int(r["errors"])),
        )
    console.print(table)
    load_table = Table(title=f"2 workers, {connections} connections, {results['rps_case']}")
    for column in ("system", "req/s", "p50", "p99", "err"):
        load_table.add_column(column, justify="right")
    for system, r in results["throughput"].items():
        load_table.add_row(
            system, f"{r['rps']:.0f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", str(int(r["errors"]))
        )
    console.print(load_table)
    for what, met, figures in verdicts(results, connections):
        verdict = "[green]PASS[/]" if met else "[red]MISS[/]"
        console.print(f"{verdict}  {what}: {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help=f"directory of bundles (default: DeepFM-D trained into {DEFAULT_MODELS})",
    )
    parser.add_argument("--model", default=None, help="bundle (subdirectory) to request; default: the first")
    parser.add_argument("--data", type=Path, default=DATA, help="frappe_ctr directory (payloads)")
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=int, default=3, help="each measurement (after 1 s of warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are their medians")
    parser.add_argument("--connections", type=int, default=8, help="for requests/s with 2 workers")
    parser.add_argument("--repeats", type=int, default=2000, help="bare ONNX calls timed")
    parser.add_argument(
        "--item-cache-size",
        type=int,
        default=None,
        help="APPRANK_ITEM_CACHE_SIZE (default: the service's); 0 encodes every candidate",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    load_before = os.getloadavg()
    results = run(args)
    show(results, args.connections)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        machine = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average": os.getloadavg(),
            "load_generator": "wrk" if shutil.which("wrk") else "python",
        }
        options = {
            "rounds": args.rounds,
            "item_cache_size": args.item_cache_size,
            "seconds": args.seconds,
            "connections": args.connections,
        }
        verdict = [{"target": w, "met": m, "figures": f} for w, m, f in verdicts(results, args.connections)]
        document = {"machine": machine, "options": options, **results, "verdicts": verdict}
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
