"""Speed and memory of synthesis on this machine; writes ``benchmarks/results/synthesis.json``.

1. **Full brain from files**: ``mrisynthesis synthesize --task TASK`` with its defaults on a 1 mm brain
   (182x218x182): the real ``ms-patient07`` case when ``--case`` exists, else a 1 mm phantom written to a
   temporary folder. Wall time and peak resident memory of the child process tree (psutil, sampled every
   20 ms, cross-checked with ``getrusage(RUSAGE_CHILDREN).ru_maxrss``). Goals: <= 120 s, <= 4 GB.
2. **Quality versus steps**: on a held-out phantom prepared exactly like the pipeline, the same network and
   seed sampled with DDPM (1000 steps, the reference), DDIM and DPM-Solver++ (1, 2, 5, 10, 20, 50 steps); each
   run is the mean of ``--samples`` samples (for latent-residual models the samples' own mean, whatever the
   card's map estimate). PSNR in the brain with the truth's 0.5-99.5 percentile range as the peak.
   For each run: PSNR against the DDPM-1000 reference, PSNR against the ground truth, the loss against
   DDPM-1000's own ground-truth PSNR, time and speed-up. Goal: >= 50x faster at <= 0.3 dB loss. When a
   1000-step reference on the whole grid would exceed ``--reference-budget`` seconds, every run of part 2
   uses a centred crop instead (stated in the output).

For ``--task stroke-dwi-adc`` part 1 runs on a 1 mm phantom CT perfusion series (4D NRRD) and part 2 scores
``--output`` (e.g. adc) on a held-out phantom stroke subject.

Usage: ``python benchmarks/bench_synthesis.py [--task myelin-psr] [--case DIR] [--threads 1] [--skip-full]
[--output NAME] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "synthesis.json"
DEFAULT_CASE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "ms-patient07"
STEPS = (1, 2, 5, 10, 20, 50)
GOALS = {"full_brain_seconds": 120.0, "full_brain_peak_gb": 4.0, "speedup": 50.0, "psnr_loss_db": 0.3}


def _input_files(task: str, case: Path, folder: Path) -> dict[str, str]:
    """Input files of the task: ``t1w``/``flair`` of the real case, else a 1 mm phantom written into ``folder``
    (for ``stroke-dwi-adc`` a 4D CT perfusion series as NRRD with its frame times)."""
    from MRISynthesisLib.phantom import generate_subject
    from MRISynthesisLib.volume import write_volume

    if task == "stroke-dwi-adc":
        subject = generate_subject(10_000, "stroke", spacing=1.0, shape=(182, 218, 182), maps=("ctp",),
                                   randomize_acquisition=True)
        frames = subject.maps["ctp"].array.shape[0]
        return {"ctp": str(write_volume(subject.maps["ctp"], folder / "ctp.nrrd")),
                "source": f"phantom seed 10000 (stroke) at 1 mm: CT perfusion, {frames} frames of 182x218x182"}
    if (case / "t1w.nii.gz").is_file() and (case / "flair.nii.gz").is_file():
        return {"t1w": str(case / "t1w.nii.gz"), "flair": str(case / "flair.nii.gz"), "source": str(case)}
    subject = generate_subject(10_000, "ms", spacing=1.0, shape=(182, 218, 182), maps=("mprage", "flair"),
                               randomize_acquisition=True)
    return {"t1w": str(write_volume(subject.maps["mprage"], folder / "t1w.nii.gz")),
            "flair": str(write_volume(subject.maps["flair"], folder / "flair.nii.gz")),
            "source": "phantom seed 10000 (ms) at 1 mm, 182x218x182"}


def full_brain(task: str, case: Path, threads: int | None = None) -> dict:
    """Time and peak memory of one ``mrisynthesis synthesize`` run from files to written outputs."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="bench-synthesis-") as temp:
        files = _input_files(task, case, Path(temp))
        inputs = [argument for name, path in files.items() if name != "source" for argument in ("--input", f"{name}={path}")]
        command = [sys.executable, "-m", "MRISynthesisLib", "synthesize", "--task", task, *inputs,
                   "--output", str(Path(temp) / "out"), "--quiet"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        child = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        peak = 0
        while child.poll() is None:
            try:
                tree = [child, *child.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.02)
        stdout, stderr = child.communicate()
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            raise RuntimeError(f"synthesize failed ({child.returncode}): {stderr.strip()[-500:]}")
        written = sorted(p.name for p in (Path(temp) / "out").iterdir())
        # The summary JSON is the last thing printed; libraries may log lines before it.
        summary = json.loads(stdout[stdout.index("\n{") + 1:] if not stdout.startswith("{") else stdout)
    # ru_maxrss (kB on Linux) is the largest waited-for child so far: when it grew, it is this child's exact peak.
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rusage_peak = after * 1024 if after > before else 0
    peak = max(peak, rusage_peak)
    return {"input": files["source"], "command": " ".join(command[2:]), "threads": threads or "default",
            "seconds": round(seconds, 2),
            "peak_rss_gb": round(peak / 1e9, 3), "rusage_peak_gb": round(rusage_peak / 1e9, 3) or None,
            "load_average": [round(x, 2) for x in os.getloadavg()], "model_grid": summary.get("model_grid"),
            "steps": summary.get("steps"),
            "sampler": summary.get("sampler"), "written": written,
            "meets_goal": seconds <= GOALS["full_brain_seconds"] and peak / 1e9 <= GOALS["full_brain_peak_gb"]}


def _psnr(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray, data_range: float) -> float:
    from MRISynthesisLib import metrics

    return metrics.psnr(prediction, reference, mask, data_range)


def steps_sweep(task: str, budget_s: float, crop: int, samples: int = 4, output: str | None = None) -> dict:
    """PSNR and time versus sampler steps against DDPM-1000 of the same network and seed, for the card's
    ``output`` (default its first)."""
    import torch

    from MRISynthesisLib.engine.model import SynthesisModel
    from MRISynthesisLib.model_store.registry import ModelRegistry
    from MRISynthesisLib.tasks import get_task
    from MRISynthesisLib.training.data import output_scale, phantom_subjects, task_data

    registry = ModelRegistry()
    model_id = get_task(task).model_id
    model = SynthesisModel.from_registry(registry, model_id, device="cpu")
    card = registry.card(model_id)
    sample = phantom_subjects(task_data(task), [10_000], float(card.spacing[0]), card.multiple)[0]
    output = output or card.outputs[0]
    channel = card.outputs.index(output)
    scale, offset = card.output_affine(output)
    # Everything below in physical units: the sample's target is physical / the recipe's scale.
    inputs, brain = sample.inputs, sample.brain[0] > 0
    truth = sample.target[channel] * output_scale(task_data(task).targets[output][1])

    def run(sampler: str, steps: int, x: np.ndarray) -> tuple[np.ndarray, float]:
        began = time.perf_counter()
        # estimate="samples": the sampler's own output (a card may map the predictor's mean instead, which does
        # not depend on the sampler at all)
        mean, _ = model.predict(torch.from_numpy(np.ascontiguousarray(x))[None], steps=steps, sampler=sampler, seed=0,
                                samples=samples, **({"estimate": "samples"} if model.residual_networks else {}))
        return mean[0, channel].numpy() * scale + offset, time.perf_counter() - began

    # Cost of one denoising step on the whole grid: difference of a 3-step and a 1-step run.
    _, one = run("ddim", 1, inputs)
    _, three = run("ddim", 3, inputs)
    per_step = max((three - one) / 2, 1e-3)
    estimate = one + 999 * per_step * samples
    region = "whole model grid"
    if estimate > budget_s:
        centre = np.array(np.nonzero(brain)).mean(1).round().astype(int)
        size = [min(crop, s) // card.multiple * card.multiple for s in brain.shape]
        start = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, size, brain.shape)]
        box = tuple(slice(a, a + s) for a, s in zip(start, size))
        inputs, truth, brain = inputs[(slice(None), *box)], truth[box], brain[box]
        region = (f"centred crop {size} of the {list(sample.brain.shape[1:])} model grid (DDPM-1000 on the whole "
                  f"grid was estimated at {estimate:.0f} s > budget {budget_s:.0f} s)")
    low, high = np.percentile(truth[brain], [0.5, 99.5])
    data_range = float(high - low)  # PSNR peak: the truth's 0.5-99.5 percentile range in the brain
    reference, reference_seconds = run("ddpm", 1000, inputs)
    reference_truth_psnr = _psnr(reference, truth, brain, data_range)
    rows = [{"sampler": "ddpm", "steps": 1000, "seconds": round(reference_seconds, 2), "speedup": 1.0,
             "psnr_vs_ddpm1000": None, "psnr_vs_truth": round(reference_truth_psnr, 3), "loss_db": 0.0}]
    for sampler in ("ddim", "dpm++"):
        for steps in STEPS:
            prediction, seconds = run(sampler, steps, inputs)
            truth_psnr = _psnr(prediction, truth, brain, data_range)
            rows.append({"sampler": sampler, "steps": steps, "seconds": round(seconds, 2),
                         "speedup": round(reference_seconds / seconds, 1),
                         "psnr_vs_ddpm1000": round(_psnr(prediction, reference, brain, data_range), 3),
                         "psnr_vs_truth": round(truth_psnr, 3), "loss_db": round(reference_truth_psnr - truth_psnr, 3)})
    fast = [r for r in rows[1:] if r["speedup"] >= GOALS["speedup"] and r["loss_db"] <= GOALS["psnr_loss_db"]]
    return {"model": {"id": card.id, "version": card.version}, "output": output,
            "case": f"phantom seed 10000 ({sample.info['pathology']}), held out",
            "region": region, "grid": list(brain.shape), "data_range": data_range, "seed": 0, "samples": samples,
            "per_step_seconds_estimate": round(per_step, 3), "rows": rows,
            "best_meeting_goal": min(fast, key=lambda r: r["seconds"]) if fast else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="myelin-psr")
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE, help="real case folder (else a 1 mm phantom)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the steps sweep")
    parser.add_argument("--reference-budget", type=float, default=400.0,
                        help="seconds allowed for DDPM-1000 on the whole grid before switching to a crop")
    parser.add_argument("--crop", type=int, default=48, help="crop edge (voxels) when the reference is too slow")
    parser.add_argument("--samples", type=int, default=4, help="samples averaged per run (the 'balanced' K)")
    parser.add_argument("--child-threads", default="default,1",
                        help="comma-separated OMP_NUM_THREADS values for the synthesize process of part 1, one run "
                        "each ('default' = torch's own choice, all cores; 1 avoids oversubscription on a shared CPU)")
    parser.add_argument("--output", default=None, help="output map of the steps sweep (default the card's first; "
                        "adc for the stroke task's core)")
    parser.add_argument("--skip-full", action="store_true", help="skip part 1")
    parser.add_argument("--skip-steps", action="store_true", help="skip part 2")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                          "sweep_threads": args.threads}, "goals": GOALS}
    if not args.skip_full:
        result["full_brain"] = []
        for value in args.child_threads.split(","):
            threads = None if value.strip() == "default" else int(value)
            f = full_brain(args.task, args.case, threads)
            result["full_brain"].append(f)
            print(f"\nFull brain from files ({f['input']}), threads {f['threads']}: {f['seconds']:.1f} s, peak "
                  f"{f['peak_rss_gb']:.2f} GB (goal <= 120 s, <= 4 GB: {'met' if f['meets_goal'] else 'NOT met'}); "
                  f"model grid {f['model_grid']}, {f['sampler']} {f['steps']} steps", flush=True)
    if not args.skip_steps:
        result["steps_sweep"] = sweep = steps_sweep(args.task, args.reference_budget, args.crop, args.samples,
                                                           args.output)
        print(f"\nQuality vs steps on {sweep['region']}, seed 0, model {sweep['model']['id']}")
        print(f"{'sampler':8} {'steps':>5} {'seconds':>8} {'speedup':>8} {'PSNR vs DDPM1000':>17} {'PSNR vs truth':>14} "
              f"{'loss dB':>8}")
        for r in sweep["rows"]:
            vs_reference = "-" if r["psnr_vs_ddpm1000"] is None else f"{r['psnr_vs_ddpm1000']:.2f}"
            print(f"{r['sampler']:8} {r['steps']:>5} {r['seconds']:>8.2f} {r['speedup']:>8.1f} {vs_reference:>17} "
                  f"{r['psnr_vs_truth']:>14.2f} {r['loss_db']:>8.2f}")
        best = sweep["best_meeting_goal"]
        print("goal (>= 50x faster at <= 0.3 dB loss): " + (f"met by {best['sampler']} {best['steps']} steps"
                                                              if best else "NOT met"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".synthesis-", suffix=".json", dir=args.out.parent)
    with os.fdopen(handle, "w") as stream:
        json.dump(result, stream, indent=2)
    os.chmod(temp, 0o644)  # mkstemp creates 0600
    os.replace(temp, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
