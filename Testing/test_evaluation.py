"""Evaluation harness end to end on one tiny held-out phantom with real (tiny, untrained) MONAI models on disk."""

import json
import math

import numpy as np
import pytest

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.evaluation.baselines import LinearBaseline

from conftest import write_tiny_model

SPACING = 6.0


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A model home with a tiny diffusion model (conftest) and a tiny UNet baseline trained for two steps by the
    real training command into its default folder, the user model cache (the baseline is not bundled)."""
    from MRISynthesisLib.training import train_baseline

    root = write_tiny_model(tmp_path_factory.mktemp("home"), spacing=SPACING, training_seeds=(0, 1, 2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MRISYNTHESIS_HOME", str(root))
        assert train_baseline.default_out("myelin-psr") == root / "models" / "myelin-psr-unet-baseline"
        assert train_baseline.main(["--task", "myelin-psr", "--subjects", "1", "--spacing", str(SPACING),
                                    "--crop", "32", "--batch", "1", "--steps", "2", "--parameters", "1000"]) == 0
    assert (root / "models" / "myelin-psr-unet-baseline" / "card.json").is_file()
    return root


def test_linear_baseline_recovers_a_quadratic_exactly():
    rng = np.random.default_rng(0)
    inputs = rng.random((2, 6, 7, 8))
    target = (0.1 + 2 * inputs[0] - inputs[1] + 0.5 * inputs[0] * inputs[1] - 0.3 * inputs[1] ** 2)[None]
    mask = np.ones(inputs.shape[1:], bool)
    mask[0] = False
    target_with_outlier = target.copy()
    target_with_outlier[0, 0] = 1e6  # outside the mask: must not influence the fit
    model = LinearBaseline(2, 1, degree=2).fit([(inputs, target_with_outlier, mask)])
    # terms: 1, x0, x1, x0^2, x0*x1, x1^2
    np.testing.assert_allclose(model.coefficients[:, 0], [0.1, 2, -1, 0, 0.5, -0.3], atol=1e-6)
    prediction = model.predict(inputs, mask)
    np.testing.assert_allclose(prediction[:, mask], target[:, mask], atol=1e-6)
    assert np.all(prediction[:, ~mask] == 0)
    affine = LinearBaseline(2, 1, degree=1).fit([(inputs, target, mask)])
    assert np.abs(affine.predict(inputs, mask) - target)[:, mask].mean() > 1e-3  # cannot fit the curvature
    with pytest.raises(ValueError):
        LinearBaseline(2, 1).predict(inputs, mask)


def test_train_for_minutes_fits_a_weighted_target_within_its_budget():
    """A 1x1x1 convolution learns y = 2x + 1 where the weight is 1; the weight-0 half (y = -5) is ignored."""
    import torch

    from MRISynthesisLib.evaluation.baselines import train_for_minutes

    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 1, 1)
    generator = torch.Generator().manual_seed(0)

    def next_batch():
        inputs = torch.rand((2, 1, 4, 4, 4), generator=generator)
        weights = torch.zeros_like(inputs)
        weights[..., :2] = 1
        return inputs, torch.where(weights > 0, 2 * inputs + 1, torch.full_like(inputs, -5.0)), weights

    record = train_for_minutes(network, next_batch, minutes=0.05, peak_lr=0.05, log_every=50)
    assert record["steps"] >= 100 and not network.training and record["parameters"] == 2
    assert network.weight.item() == pytest.approx(2.0, abs=0.1)
    assert network.bias.item() == pytest.approx(1.0, abs=0.1)
    assert record["loss_every_50_steps"][-1][1] < record["loss_every_50_steps"][0][1]


def test_unet_baseline_card_loads_and_predicts(home):
    from MRISynthesisLib.evaluation.baselines import UNetRegressor
    from MRISynthesisLib.model_store.registry import ModelRegistry

    registry = ModelRegistry(home, bundled_dir=home / "none")
    unet = UNetRegressor.from_registry(registry, "myelin-psr-unet-baseline")
    assert unet.card.training["seeds"] == [0] and unet.card.architecture["kind"] == "unet-regressor"
    inputs = np.random.default_rng(1).random((2, 20, 24, 20)).astype(np.float32)
    mask = np.zeros((20, 24, 20), bool)
    mask[4:16, 4:20, 4:16] = True
    output = unet.predict(inputs, mask)
    assert output.shape == (1, 20, 24, 20) and np.all(output[:, ~mask] == 0) and np.isfinite(output).all()
    assert np.abs(output[:, mask]).sum() > 0


def test_evaluate_end_to_end_on_one_held_out_phantom(home, tmp_path, monkeypatch, capsys):
    from MRISynthesisLib.cli import main

    from MRISynthesisLib.phantom import generate_subject
    from MRISynthesisLib.volume import write_volume

    monkeypatch.setenv("MRISYNTHESIS_HOME", str(home))
    # a stand-in "real" case folder (t1w, flair, lesions files) so the real-case checks run without shared data
    real = tmp_path / "real"
    real.mkdir()
    subject = generate_subject(20_000, "ms", spacing=SPACING, maps=("mprage", "flair"))
    write_volume(subject.maps["mprage"], real / "t1w.nii.gz")
    write_volume(subject.maps["flair"], real / "flair.nii.gz")
    write_volume(subject.masks["lesion"], real / "lesions.nii.gz", np.uint8)
    out = tmp_path / "eval"
    code = main(["evaluate", "--task", "myelin-psr", "--n", "1", "--out", str(out), "--steps", "2",
                 "--fit-subjects", "1", "--threads", "1", "--quiet", "--real", str(real), "--acquisition", "randomized",
                 "--samples", "2"])
    assert code == 0
    report = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert set(report["summary"]) == {"diffusion", "mean predictor", "linear", "unet", "truth via model grid"}
    assert report["held_out"]["seeds"] == [10000] and report["cases"][0]["case"] == "phantom-10000-ms"
    assert report["baselines"]["linear"]["fit_seeds"] == [0]
    case = report["cases"][0]
    for method in ("diffusion", "linear", "unet"):
        values = case["methods"][method]["metrics"]["psr"]
        assert 0 < values["ssim"] <= 1 and values["mae"] > 0 and values["lesion_mae"] > 0
        assert math.isfinite(values["psnr"]) and math.isfinite(values["psnr_truth_range"])
    # a fitted quadratic of T1w/FLAIR explains PSR far better than the untrained tiny networks
    linear, diffusion = case["methods"]["linear"]["metrics"]["psr"], case["methods"]["diffusion"]["metrics"]["psr"]
    assert linear["mae"] < diffusion["mae"] and linear["psnr"] > diffusion["psnr"] + 3
    # the ground truth's own round trip through the model grid bounds every method from above
    ceiling = case["methods"]["truth via model grid"]["metrics"]["psr"]
    assert ceiling["psnr"] == "inf" or ceiling["psnr"] > linear["psnr"]
    assert "truth via model grid" not in report["goals"] and "lesion_mae_below_baselines" in report["goals"]["psr"]
    markdown = (out / "evaluation.md").read_text(encoding="utf-8")
    assert "| diffusion |" in markdown and "| unet |" in markdown and "lesion MAE" in markdown
    assert (out / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "real_case_montage.png").is_file() and "### Real case" in markdown
    real_case = report["real_case"]
    assert real_case["lesion_voxels"] == int(subject.masks["lesion"].array.sum())
    linear_real = real_case["methods"]["linear"]
    assert {"wm", "gm", "csf", "lesion", "nawm", "wm_gt_gm_gt_csf", "lesion_below_nawm"} <= set(linear_real)
    assert "evaluation.md" in capsys.readouterr().out
    # the reports exist: a second run refuses to overwrite them
    assert main(["evaluate", "--task", "myelin-psr", "--n", "1", "--out", str(out), "--quiet",
                 "--acquisition", "randomized"]) == 2


def test_evaluate_without_the_unet_baseline_skips_it_and_says_how_to_train_it(tmp_path, monkeypatch):
    """The UNet baseline is not bundled: with only the model in the user cache (and the real bundled folder),
    evaluate scores the other methods and names the command that trains the baseline into the cache."""
    from MRISynthesisLib.evaluation.run import run_evaluation

    home = write_tiny_model(tmp_path / "home", spacing=SPACING, training_seeds=(0, 1, 2))
    monkeypatch.setenv("MRISYNTHESIS_HOME", str(home))
    messages = []
    report = run_evaluation("myelin-psr", tmp_path / "eval", n=1, steps=1, samples=1, fit_subjects=1,
                            acquisition="clean", progress=messages.append)
    assert report["baselines"]["unet"] is None and "unet" not in report["summary"]
    assert {"diffusion", "linear"} <= set(report["summary"])
    assert "psr_ge_unet_plus_0.5" not in report["goals"]["psr"]
    (skipped,) = [m for m in messages if "UNet baseline" in m]
    assert "'myelin-psr-unet-baseline' is not installed" in skipped and str(home / "models") in skipped
    assert skipped.endswith("python -m MRISynthesisLib.training.train_baseline --task myelin-psr")  # default --out
    markdown = (tmp_path / "eval" / "evaluation.md").read_text(encoding="utf-8")
    assert "UNet baseline not installed (skipped" in markdown and "| unet |" not in markdown


def test_evaluate_refuses_held_out_seeds_used_for_training(home, tmp_path, monkeypatch):
    from MRISynthesisLib.evaluation.run import run_evaluation

    monkeypatch.setenv("MRISYNTHESIS_HOME", str(home))
    with pytest.raises(InputError, match="overlap the model's training seeds"):
        run_evaluation("myelin-psr", tmp_path / "x", first_seed=2, n=1)
    assert not (tmp_path / "x").exists()


def test_evaluate_help_lists_every_option(capsys):
    from MRISynthesisLib.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for option in ("--task", "--data", "--n", "--seed", "--real", "--out", "--steps", "--samples", "--acquisition"):
        assert option in text


def test_real_case_checks_on_hand_made_maps():
    from MRISynthesisLib.evaluation.real_case import check_map, tissue_classes

    t1w = np.zeros((4, 4, 12), np.float32)
    t1w[..., 0:4], t1w[..., 4:8], t1w[..., 8:12] = 10.0, 50.0, 90.0  # CSF, GM, WM by T1w brightness
    brain = np.ones(t1w.shape, bool)
    lesion = np.zeros(t1w.shape, bool)
    lesion[0, 0, 11] = True
    classes = tissue_classes(t1w + np.random.default_rng(0).normal(0, 8, t1w.shape), brain, lesion)
    for name, region in (("csf", slice(0, 4)), ("gm", slice(4, 8)), ("wm", slice(8, 12))):
        assert classes[name][..., region].mean() > 0.85
    assert not classes["wm"][lesion].any()  # lesions are excluded from every class
    psr = np.where(t1w > 60, 0.12, np.where(t1w > 30, 0.06, 0.0)).astype(np.float32)
    psr[lesion] = 0.05
    good = check_map(psr, classes, lesion)
    assert good["wm_gt_gm_gt_csf"] and good["lesion_below_nawm"]
    assert good["lesion_to_nawm_ratio"] == pytest.approx(0.05 / psr[classes["wm"]].mean(), rel=1e-5)
    inverted = check_map(0.2 - psr, classes, lesion)
    assert not inverted["wm_gt_gm_gt_csf"] and not inverted["lesion_below_nawm"]


def test_folder_cases_read_subject_folders_written_by_the_phantom(tmp_path):
    from MRISynthesisLib.evaluation.harness import folder_cases
    from MRISynthesisLib.phantom import generate_subject

    subject = generate_subject(20_001, "ms", spacing=SPACING, maps=("mprage", "flair"))
    subject.write(tmp_path / "data" / "subject-a")
    (case,) = folder_cases(tmp_path / "data", "myelin-psr")
    assert case.name == "subject-a" and set(case.inputs) == {"t1w", "flair"} and set(case.targets) == {"psr"}
    np.testing.assert_allclose(case.inputs["t1w"].array, subject.maps["mprage"].array, rtol=1e-6)
    assert np.array_equal(case.masks["lesion"].array, subject.masks["lesion"].array)
    (tmp_path / "data" / "subject-a" / "psr.nii.gz").unlink()
    with pytest.raises(InputError, match="lacks psr"):
        folder_cases(tmp_path / "data", "myelin-psr")


def test_evaluate_without_the_model_exits_3_and_writes_nothing(tmp_path, monkeypatch):
    from MRISynthesisLib.cli import main

    monkeypatch.setenv("MRISYNTHESIS_HOME", str(tmp_path / "empty"))
    import MRISynthesisLib.model_store.registry as registry_module

    monkeypatch.setattr(registry_module, "BUNDLED_DIR", tmp_path / "no-bundled")  # even if a model ships later
    assert main(["evaluate", "--task", "myelin-psr", "--out", str(tmp_path / "out"), "--quiet"]) == 3
    assert not (tmp_path / "out").exists()
