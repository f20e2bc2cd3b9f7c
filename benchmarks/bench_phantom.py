"""Phantom throughput: subjects per second at 2 mm and 1 mm (single process, one thread).

Three workloads: the PSR-training inputs only (``maps=("mprage", "flair")``, randomised acquisition),
every 3D map (no CT perfusion series) and everything including the 4D ``ctp`` series.

Usage: python benchmarks/bench_phantom.py [--repeats 3] [--spacings 2 1]
Writes benchmarks/results/phantom.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from MRISynthesisLib.phantom import MAP_NAMES, generate_subject  # noqa: E402
from MRISynthesisLib.phantom.anatomy import mni_anatomy  # noqa: E402

WORKLOADS = {
    "psr_inputs": {"maps": ("mprage", "flair"), "randomize_acquisition": True},
    "all_3d_maps": {"maps": tuple(n for n in MAP_NAMES if n != "ctp"), "randomize_acquisition": True},
    "everything": {"maps": None, "randomize_acquisition": True},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="subjects per (spacing, pathology, workload)")
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 1.0])
    parser.add_argument("--pathologies", nargs="+", default=["ms", "none"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "phantom.json")
    args = parser.parse_args()
    start = time.perf_counter()
    mni_anatomy()
    setup = time.perf_counter() - start
    rows = []
    for spacing in args.spacings:
        for workload, options in WORKLOADS.items():
            for pathology in args.pathologies:
                generate_subject(999, pathology, spacing, **options)  # warm caches (MPRAGE tables, spline matrices)
                times = []
                for seed in range(args.repeats):
                    begin = time.perf_counter()
                    subject = generate_subject(seed, pathology, spacing, **options)
                    times.append(time.perf_counter() - begin)
                median = float(np.median(times))
                rows.append({"spacing_mm": spacing, "workload": workload, "pathology": pathology,
                             "shape_zyx": list(subject.masks["brain"].shape), "seconds_median": median,
                             "seconds_all": times, "subjects_per_second": 1.0 / median})
                print(f"{spacing:4.1f} mm  {workload:<12} {pathology:<7} {tuple(rows[-1]['shape_zyx'])}  "
                      f"{median:6.2f} s/subject  {1.0 / median:6.2f} subjects/s", flush=True)
    result = {"rows": rows, "anatomy_setup_seconds": setup, "repeats": args.repeats,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "note": "median wall time per subject, one process; the machine may be shared with other jobs"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"anatomy setup (once per process): {setup:.2f} s\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
