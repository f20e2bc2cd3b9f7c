"""Real-background training subjects of the lesion segmenter: a scan without MS gets inserted lesions in its white
matter, its own pathology is found and ignored by the loss (``segmentation/real_background.py``). A small synthetic
"scan" written as NIfTI stands in for the real one (tests run without ``../shared``)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from MRISynthesisLib.phantom.anatomy import CSF, GM, VENTRICLE, WM
from MRISynthesisLib.segmentation.architecture import SegmenterArchitecture
from MRISynthesisLib.segmentation.data import IGNORED, CachedSubject, random_crop, randomised_channels
from MRISynthesisLib.segmentation.real_background import cache_real_backgrounds, own_pathology
from MRISynthesisLib.segmentation.train import ignore_in_loss

SHAPE = (72, 80, 80)


def synthetic_scan(rng: np.random.Generator):
    """A 1 mm ellipsoid brain: CSF rim, grey matter shell, white matter core around two ventricles, a 4 mL
    FLAIR-bright 'tumour' in the right white matter and a 3-voxel bright spot. Returns (t1w, flair, truth classes,
    tumour mask)."""
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij")
    radius = np.sqrt(zz ** 2 + yy ** 2 + xx ** 2)
    classes = np.zeros(SHAPE, np.uint8)
    classes[radius < 0.95] = CSF
    classes[radius < 0.9] = GM
    classes[radius < 0.75] = WM
    ventricles = (np.abs(zz) < 0.15) & (np.abs(yy) < 0.35) & (np.abs(np.abs(xx) - 0.15) < 0.06)
    classes[ventricles] = VENTRICLE
    t1_level = {0: 0.0, WM: 1.0, GM: 0.65, CSF: 0.25, VENTRICLE: 0.25}
    flair_level = {0: 0.0, WM: 1.0, GM: 1.25, CSF: 0.2, VENTRICLE: 0.2}
    t1w = np.vectorize(t1_level.get)(classes).astype(np.float32)
    flair = np.vectorize(flair_level.get)(classes).astype(np.float32)
    tumour = ((zz - 0.1) ** 2 + (yy + 0.2) ** 2 + (xx - 0.45) ** 2) < 0.12 ** 2 * 4
    flair[tumour] = 2.2
    flair[10 + 30, 40, 20:23] = 2.2  # 3 voxels: too small to be the scan's own pathology
    noise = 1 + 0.03 * rng.standard_normal((2, *SHAPE)).astype(np.float32)
    inside = classes > 0
    return (t1w * noise[0] * inside) * 500, (flair * noise[1] * inside) * 300, classes, tumour


def write_case(folder, t1w, flair):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("t1n", t1w), ("t2f", flair)):
        image = sitk.GetImageFromArray(array)
        image.SetOrigin((3.0, -4.0, 5.0))
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))


def test_own_pathology_covers_the_tumour_with_a_margin_and_not_small_spots():
    t1w, flair, classes, tumour = synthetic_scan(np.random.default_rng(0))
    ignored = own_pathology(flair, classes > 0)
    assert ignored[tumour].all()
    assert ignored.sum() > 1.5 * tumour.sum()  # the margin (oedema fades out)
    assert not ignored[40, 40, 20:23].any()


def test_real_background_variants_insert_white_matter_lesions_outside_the_ignored_region(tmp_path):
    t1w, flair, classes, tumour = synthetic_scan(np.random.default_rng(1))
    case = tmp_path / "case-without-ms"
    write_case(case, t1w, flair)
    before = {path.name: path.read_bytes() for path in case.iterdir()}
    paths = cache_real_backgrounds(tmp_path / "cache", case, 3, seed=7, t1_name="t1n", flair_name="t2f")
    assert [path.name for path in paths] == [f"real-case-without-ms-{i}.npz" for i in range(3)]
    assert {path.name: path.read_bytes() for path in case.iterdir()} == before  # the scan is only read
    assert not list((tmp_path / "cache").glob(".*partial*"))
    lesion_sets = []
    for path in paths:
        subject = CachedSubject.load(path)
        assert subject.is_real_background and subject.ignore[tumour].all()
        assert subject.lesion.any() and not (subject.lesion & subject.ignore).any()
        # Lesions lie in the scan's white matter (as the T1w split found it: the synthetic classes, up to a voxel).
        near_white = np.isin(classes, (WM,))
        assert near_white[subject.lesion].mean() > 0.9
        # Outside the lesions the images are the scan's own voxels.
        outside = subject.fractions["lesion"] == 0
        np.testing.assert_array_equal(subject.images["flair"][outside], flair[outside])
        np.testing.assert_array_equal(subject.images["mprage"][outside], t1w[outside])
        total = sum(subject.fractions[name] for name in ("wm", "gm", "deep_gm", "csf", "lesion"))
        assert np.allclose(total[classes > 0], 1.0, atol=0.02)
        lesion_sets.append(subject.lesion)
    assert not np.array_equal(lesion_sets[0], lesion_sets[1])  # a fresh lesion set per variant
    assert cache_real_backgrounds(tmp_path / "cache", case, 3, seed=7, t1_name="t1n", flair_name="t2f") == paths


def test_real_background_crops_mark_the_ignored_region_and_the_loss_skips_it(tmp_path):
    t1w, flair, classes, tumour = synthetic_scan(np.random.default_rng(2))
    case = tmp_path / "scan"
    write_case(case, t1w, flair)
    subject = CachedSubject.load(cache_real_backgrounds(tmp_path / "cache", case, 1, t1_name="t1n",
                                                        flair_name="t2f")[0])
    rng = np.random.default_rng(3)
    channels = randomised_channels(subject, ("t1w", "flair"), (1.0, 90.0), rng)
    flair_channel = channels[1]
    assert flair_channel[tumour].mean() > 1.3  # visible, brighter than the normal tissue's 90th percentile
    kept = subject.sampling_brain()
    assert np.isclose(np.percentile(flair_channel[kept], 90), 1.0, atol=1e-3)  # percentiles without the tumour
    target = subject.target()
    assert set(np.unique(target)) == {0, 1, IGNORED}
    for _ in range(8):
        crop, crop_target = random_crop(channels, target, kept, 32, rng, lesion_fraction=1.0)
        assert crop_target.max() <= IGNORED
    # The loss: predicted 0 where ignored, so neither an error nor a gradient comes from there.
    architecture = SegmenterArchitecture(channels=(4, 8), strides=(2,), roi=16)
    network = architecture.build()
    inputs = torch.from_numpy(np.ascontiguousarray(channels[:, 20:36, 40:56, 50:66]))[None]
    labels = torch.from_numpy(target[20:36, 40:56, 50:66].astype(np.float32))[None, None]
    assert bool((labels == IGNORED).any())
    logits = network(inputs).detach().requires_grad_(True)
    masked_logits, masked_labels = ignore_in_loss(logits, labels)
    assert set(torch.unique(masked_labels).tolist()) <= {0.0, 1.0}
    masked_logits.sum().backward()
    assert float(logits.grad[labels == IGNORED].abs().max()) == 0.0
    assert float(logits.grad[labels != IGNORED].abs().min()) == 1.0
