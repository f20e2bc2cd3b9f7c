"""Render the catalog figure ``MRISynthesis-montage.png`` from a simulated MS phantom.

Rows: the inputs the module takes (T1w, FLAIR), the phantom's ground-truth myelin PSR in the module's display
(Inferno, 0-0.2) with lesion outlines. Until a trained model ships, the PSR row is the simulation's ground
truth, labelled as such. Run: ``python Resources/Screenshots/make_montage.py``.
"""

from pathlib import Path

from MRISynthesisLib.phantom import generate_subject
from MRISynthesisLib.report import write_montage
from MRISynthesisLib.tasks import get_task

if __name__ == "__main__":
    subject = generate_subject(seed=3, pathology="ms", spacing=1.5)
    spec = get_task("myelin-psr").outputs[0]
    rows = [("T1w (MPRAGE)", subject.maps["mprage"], None, "Grey"),
            ("FLAIR", subject.maps["flair"], None, "Grey"),
            ("PSR (phantom truth)", subject.maps["psr"], spec.display_range, spec.colormap)]
    path = write_montage(rows, Path(__file__).with_name("MRISynthesis-montage.png"), subject.masks["lesion"],
                         "MRISynthesis: myelin PSR from T1w + FLAIR, MS lesion outlines (simulated case)")
    print(path)
