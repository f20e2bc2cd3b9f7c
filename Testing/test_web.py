"""The web app (``mrisynthesis serve``): its session logic on slicer-core's MRML, and the real page in headless
Chromium (Playwright over the DevTools protocol) against a real server on a free loopback port.

Browser tests are skipped, with the reason, where the optional web dependencies or Chromium are missing;
``.ci/run`` installs both, so CI runs them.
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.errors import InputError
from MRISynthesisLib.tasks import get_task

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[test]')")

from MRISynthesisLib import mrml  # noqa: E402
from MRISynthesisLib.volume import read_volume  # noqa: E402
from MRISynthesisLib.web.headless import CHROMIUM_ARGS, ServerProcess, chromium_path, open_page  # noqa: E402
from MRISynthesisLib.web.session import WebSession, safe_filename, volume_name  # noqa: E402

HAS_WEB = all(__import__("importlib").util.find_spec(name) for name in ("trame_slicer", "playwright"))
needs_browser = pytest.mark.skipif(not (chromium_path() and HAS_WEB),
                                   reason="needs Chromium (Debian package 'chromium') and the web extras "
                                          "(pip install -e '.[web,test]'); .ci/run installs both")
SATURATION = 60  # max-min of R, G, B: grey images stay far below, Inferno and the lesion outlines far above


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    """A 2 mm MS phantom (MPRAGE + FLAIR), as ``./scripts/demo.sh`` makes at 1 mm."""
    out = tmp_path_factory.mktemp("case")
    subprocess.run([sys.executable, "-m", "MRISynthesisLib.cli", "phantom", "--n", "1", "--seed", "2026",
                    "--pathology", "ms", "--spacing", "2", "--maps", "mprage", "flair", "--out", str(out)],
                   check=True, capture_output=True)
    return out / "sub-2026"


def new_session(tmp_path, **options) -> WebSession:
    return WebSession(slicer.vtkMRMLScene(), tmp_path / "downloads", **options)


# ------------------------------------------------------------------------------------ session (no page)
def test_names_from_browser_files_are_safe():
    assert safe_filename("../../etc/passwd.nii.gz") == "passwd.nii.gz"
    assert safe_filename("C:\\data\\my flair.nrrd") == "my_flair.nrrd"
    assert volume_name("sub-01_FLAIR.nii.gz") == "sub-01_FLAIR"
    with pytest.raises(InputError):
        safe_filename("..")


def test_uploads_load_with_the_pipeline_checks_all_or_nothing(case, tmp_path):
    session = new_session(tmp_path, max_upload_mb=50)
    flair = (case / "flair.nii.gz").read_bytes()
    with pytest.raises(InputError, match="not a supported image file"):
        session.load_uploads([("flair.nii.gz", flair), ("notes.txt", b"hello")])
    with pytest.raises(InputError, match="cannot read"):  # a broken file among good ones adds nothing
        session.load_uploads([("flair.nii.gz", flair), ("t1.nii.gz", b"not an image")])
    single = sitk.GetImageFromArray(np.random.default_rng(0).random((1, 32, 32)).astype(np.float32))
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(single, str(path))
    with pytest.raises(InputError, match="is a 2D image"):
        session.load_uploads([("slice.nrrd", path.read_bytes())])
    assert session.volumes() == []
    nodes = session.load_uploads([("mprage.nii.gz", (case / "mprage.nii.gz").read_bytes()), ("flair.nii.gz", flair)])
    assert [node.GetName() for node in nodes] == ["mprage", "flair"]
    loaded, written = mrml.node_to_volume(nodes[1]), read_volume(case / "flair.nii.gz")
    assert loaded.same_grid(written) and np.array_equal(loaded.array, written.array)
    chosen = WebSession.auto_assign(get_task("myelin-psr"), session.volumes())
    assert chosen == {"t1w": nodes[0].GetID(), "flair": nodes[1].GetID()}


def test_upload_limit_is_checked_before_reading(tmp_path):
    session = new_session(tmp_path, max_upload_mb=1)
    with pytest.raises(InputError, match="more than the server's upload limit of 1 MB"):
        session.check_upload("flair.nii.gz", 3 * 1024 * 1024)
    with pytest.raises(InputError, match="upload limit"):
        session.load_uploads([("flair.nii.gz", bytes(2 * 1024 * 1024))])
    assert session.volumes() == []


def test_server_data_folder_is_the_only_one_readable(case, tmp_path):
    session = new_session(tmp_path, data_dir=case)
    assert "flair.nii.gz" in session.data_files() and "parameters.json" not in session.data_files()
    with pytest.raises(InputError, match="outside the server's data folder"):
        session.load_data(["../" + case.name + "/flair.nii.gz", "../../etc/hostname"])
    assert session.volumes() == []
    assert [node.GetName() for node in session.load_data(["flair.nii.gz"])] == ["flair"]
    with pytest.raises(InputError, match="without --data"):
        new_session(tmp_path).load_data(["flair.nii.gz"])


def test_start_refuses_missing_required_inputs(case, tmp_path):
    session = new_session(tmp_path, data_dir=case)
    flair, = session.load_data(["flair.nii.gz"])
    with pytest.raises(InputError, match="choose a volume for t1w"):
        session.start("myelin-psr", {"t1w": None, "flair": flair.GetID()})
    with pytest.raises(InputError, match="must be one of fast"):
        session.start("myelin-psr", {"t1w": flair.GetID(), "flair": flair.GetID()}, quality="ultra")
    assert not session.running


def test_serve_refuses_a_public_address_without_allow_remote():
    result = subprocess.run([sys.executable, "-m", "MRISynthesisLib.cli", "serve", "--host", "0.0.0.0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr and "--allow-remote" in result.stderr


# ------------------------------------------------------------------------------------------ the page
@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def state(page, name: str):
    return page.evaluate(f"window.trame.state.get({name!r})")


def views_rgb(page) -> np.ndarray:
    """Screenshot of the slice views as an ``(h, w, 3)`` int array."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(page.locator(".mrs-views").screenshot())).convert("RGB")).astype(int)


def saturated_fraction(page) -> float:
    """Share of clearly coloured pixels in the slice views (Inferno map, lesion outlines); grey images ~0."""
    pixels = views_rgb(page)
    return float(np.mean(pixels.max(axis=2) - pixels.min(axis=2) > SATURATION))


def cyan_pixels(page) -> int:
    """Pixels of lesion 1's outline colour (``mrml.LESION_COLORS[0]``, cyan) in the slice views."""
    views = views_rgb(page)
    return int(((views[..., 0] < 90) & (views[..., 1] > 170) & (views[..., 2] > 200)).sum())


def upload_case(page, case: Path) -> None:
    page.set_input_files(".mrs-upload input[type=file]", [str(case / "mprage.nii.gz"), str(case / "flair.nii.gz")])
    page.wait_for_function("window.trame.state.get('volumes').length === 2", timeout=60_000)


@needs_browser
def test_page_runs_myelin_psr_with_the_bundled_model(browser, case, tmp_path):
    server = ServerProcess(tmp_path)
    try:
        page = open_page(browser, server.url)
        upload_case(page, case)
        assert "mprage, flair" in page.locator(".mrs-volumes").inner_text()
        assert [state(page, "input_0"), state(page, "input_1")] == [v["value"] for v in state(page, "volumes")]
        page.wait_for_timeout(1500)  # let the views render the FLAIR
        assert np.mean(views_rgb(page).max(axis=2) > 40) > 0.1, "the loaded FLAIR should fill the views"
        assert saturated_fraction(page) < 0.002, "grey input should not look colour-mapped"
        page.evaluate("window.trame.state.set('quality', 'fast')")
        page.locator(".mrs-run").click()
        page.wait_for_function("window.trame.state.get('run_state') === 'running'", timeout=30_000)
        assert page.locator(".mrs-run").inner_text().strip().lower() == "cancel"
        page.wait_for_function("window.trame.state.get('run_state') !== 'running'", timeout=600_000)
        assert state(page, "run_state") == "done", state(page, "log")
        assert "made by segmenter ms-lesion-segmenter" in page.locator(".mrs-status").inner_text()

        names = state(page, "result_names")
        assert names == ["mprage psr (myelin-psr)", "mprage psr std (myelin-psr)", "mprage lesions (myelin-psr)",
                         "mprage lesion statistics (myelin-psr)"]
        rows = state(page, "lesion_rows")
        assert rows and page.locator(".mrs-lesion-table tbody tr").count() == min(len(rows), 10)
        links = page.locator(".mrs-download")
        files = {links.nth(index).inner_text().strip(): links.nth(index).get_attribute("href")
                 for index in range(links.count())}
        assert {"psr.nii.gz", "psr_uncertainty.nii.gz", "lesions.nii.gz", "lesions.csv", "summary.json"} <= set(files)
        with urllib.request.urlopen(server.url + files["psr.nii.gz"], timeout=30) as response:
            (tmp_path / "psr.nii.gz").write_bytes(response.read())
        psr, mprage = sitk.ReadImage(str(tmp_path / "psr.nii.gz")), sitk.ReadImage(str(case / "mprage.nii.gz"))
        assert psr.GetSize() == mprage.GetSize() and np.allclose(psr.GetOrigin(), mprage.GetOrigin())
        with urllib.request.urlopen(server.url + files["lesions.csv"], timeout=30) as response:
            assert response.read().decode().count("\n") == len(rows) + 1

        # The map is shown in Inferno: coloured pixels where only grey ones were before.
        page.wait_for_timeout(1500)
        mapped = saturated_fraction(page)
        assert mapped > 0.05, f"only {mapped:.3f} of the views is colour-mapped"
        # A click on the largest lesion's row centres the views on it: its outline is drawn in every view.
        page.locator(".mrs-lesion-table tbody tr").first.click()
        page.wait_for_function("window.trame.state.get('status').startsWith('Lesion 1:')", timeout=30_000)
        page.wait_for_timeout(1500)
        assert cyan_pixels(page) > 20, f"{cyan_pixels(page)} outline pixels of lesion 1 in the views"
        page.locator(".mrs-show-lesions input").click()  # the outlines switch hides them
        page.wait_for_function("window.trame.state.get('show_lesions') === false", timeout=10_000)
        page.wait_for_timeout(1500)
        assert cyan_pixels(page) < 5
        # The views show what the selector says: the map (after the run), then the uncertainty map.
        assert state(page, "view_volume") == next(v["value"] for v in state(page, "volumes")
                                                  if v["title"] == "mprage psr (myelin-psr)")
    finally:
        server.stop()


@needs_browser
def test_cancel_mid_run_adds_nothing(browser, case, tmp_path):
    server = ServerProcess(tmp_path)
    try:
        page = open_page(browser, server.url)
        upload_case(page, case)
        volumes_before = state(page, "volumes")
        page.evaluate("window.trame.state.set('quality', 'best')")
        page.locator(".mrs-run").click()
        page.wait_for_function("(window.trame.state.get('status') || '').startsWith('sample')", timeout=300_000)
        assert server.workers(), "a worker process should be running"
        page.locator(".mrs-run").click()  # the same button reads Cancel now
        page.wait_for_function("window.trame.state.get('run_state') === 'cancelled'", timeout=30_000)
        assert "nothing was added" in page.locator(".mrs-status").inner_text()
        assert state(page, "volumes") == volumes_before
        assert state(page, "result_names") == [] and state(page, "downloads") == []
        assert page.locator(".mrs-results").count() == 0
        deadline = time.monotonic() + 10
        while server.workers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not server.workers(), "the worker process tree must be gone"
        assert not any(server.downloads.iterdir())
        page.wait_for_timeout(1000)
        assert saturated_fraction(page) < 0.002
    finally:
        server.stop()


@needs_browser
def test_bad_uploads_are_refused_in_the_page(browser, case, tmp_path):
    server = ServerProcess(tmp_path, "--max-upload-mb", "0.05")
    try:
        page = open_page(browser, server.url)
        page.set_input_files(".mrs-upload input[type=file]", [str(case / "flair.nii.gz")])
        page.wait_for_selector(".mrs-error", timeout=30_000)
        assert "more than the upload limit" in page.locator(".mrs-error").inner_text()
        broken = tmp_path / "t1.nii.gz"
        broken.write_bytes(b"not an image at all")
        page.set_input_files(".mrs-upload input[type=file]", [str(broken)])
        page.wait_for_function("(window.trame.state.get('error') || '').includes('cannot read')", timeout=30_000)
        assert "t1" in page.locator(".mrs-error").inner_text()
        assert state(page, "volumes") == []
    finally:
        server.stop()
