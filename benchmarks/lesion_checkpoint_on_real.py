"""Score a lesion-segmenter training run's current checkpoint (its EMA weights) on a real case, while it trains.

Checkpoints are overwritten every 250 steps, so each call also keeps the scored EMA weights as
``<run>/snapshots/step-<N>.safetensors`` (float16, as exported) and appends the scores to
``<run>/real_case.jsonl``: a run can then be compared checkpoint by checkpoint on the real case and any snapshot
exported later. The network is ``SegmenterArchitecture()``, the one ``segmentation.train`` builds for crops up
to 96 voxels. The real case is validation data: choose between checkpoints with it, report the held-out
phantoms and unseen real cases beside it.

Usage: ``python benchmarks/lesion_checkpoint_on_real.py RUN [RUN ...] [--real ../shared/data/real/ms-patient07]
[--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def score_checkpoint(run: Path, real: Path) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    from MRISynthesisLib.segmentation.architecture import STEM, SegmenterArchitecture
    from MRISynthesisLib.segmentation.evaluate import evaluate_real_case
    from MRISynthesisLib.segmentation.segmenter import LesionSegmenter

    folder = run / "checkpoint"
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    shadow = load_file(str(folder / "ema.safetensors"))
    architecture = SegmenterArchitecture()
    network = architecture.build()
    prefix = f"{STEM}."
    weights = {key[len(prefix):]: value.half() for key, value in shadow.items() if key.startswith(prefix)}
    buffers = {key: value for key, value in network.state_dict().items() if key not in weights}
    network.load_state_dict({**{key: value.float() for key, value in weights.items()}, **buffers}, strict=True)
    snapshots = run / "snapshots"
    snapshots.mkdir(exist_ok=True)
    save_file({key: value.contiguous() for key, value in weights.items()},
              str(snapshots / f"step-{state['step']}.safetensors"))
    with torch.no_grad():
        scores = evaluate_real_case(LesionSegmenter(network, architecture, (1.0, 1.0, 1.0), run.name), real)
    entry = {"step": state["step"], **{method: {key: scores[method][key] for key in
                                                ("dice", "f1", "predicted_ml", "true_ml")}
                                       for method in ("segmenter", "segmenter_flair_only")}}
    with (run / "real_case.jsonl").open("a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="training run folders (with checkpoint/)")
    parser.add_argument("--real", type=Path, default=SHARED / "real" / "ms-patient07")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    for run in args.runs:
        print(json.dumps({"run": str(run), **score_checkpoint(run, args.real)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
