"""Run evalscope's MIA-Bench on a local hub-layout dataset (the peer of run.py).

Started by ``benchmarks/run.py --peer-evalscope`` with an interpreter that has
evalscope installed (never the plugin's venv).  evalscope loads a dataset from
a local path when ``dataset_id`` is an existing directory (``datasets``
``load_dataset(dir)``, no hub access), so it reads the very parquet the
plugin reads.  The model and the judge are the loopback server; the judge
runs in the same thread-pool task as the prediction (``eval_batch_size``
threads), which is the same shape as the plugin's look-ahead.

Writes ``{"total_score": ...}`` to ``--result`` for run.py's table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="hub-layout directory (data/test-*.parquet)")
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible base URL (loopback)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--judge-model", required=True)
    parser.add_argument("--concurrency", type=int, required=True, help="eval_batch_size: samples in flight")
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--work-dir", required=True, help="evalscope's outputs (a temp dir)")
    parser.add_argument("--result", required=True, help="where to write {total_score}")
    return parser.parse_args(argv)


def headline(report: Any) -> float | None:
    """The judge_score of evalscope's report object, however it nests."""
    data = report.to_dict() if hasattr(report, "to_dict") else report
    if isinstance(data, dict):
        for key in ("score", "judge_score"):
            if isinstance(data.get(key), (int, float)):
                return float(data[key])
        for value in data.values():
            found = headline(value)
            if found is not None:
                return found
    if isinstance(data, list):
        for value in data:
            found = headline(value)
            if found is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from evalscope import TaskConfig, run_task

    # No key reaches the loopback server; evalscope's clients insist on one.
    task = TaskConfig(
        model=args.model,
        api_url=args.base_url,
        api_key="EMPTY",
        eval_type="openai_api",
        datasets=["mia_bench"],
        dataset_args={"mia_bench": {"dataset_id": args.dataset}},
        eval_batch_size=args.concurrency,
        limit=args.samples,
        work_dir=args.work_dir,
        no_timestamp=True,
        judge={
            "strategy": "llm",
            "models": [{"model_id": args.judge_model, "api_url": args.base_url, "api_key": "EMPTY", "eval_type": "openai_api"}],
        },
    )
    outcome = run_task(task_cfg=task)
    score = headline(outcome)
    Path(args.result).write_text(json.dumps({"total_score": score}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
