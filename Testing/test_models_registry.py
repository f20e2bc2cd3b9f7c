"""Model registry: cards, URL installs against a real HTTP server, checksums, verify, remove, CLI."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from MRISynthesisLib.cli import main
from MRISynthesisLib.errors import InputError, ModelNotInstalledError
from MRISynthesisLib.model_store import ModelCard, ModelRegistry, write_model
from MRISynthesisLib.model_store.download import download


def card_fields(model_id="test-psr", version="1.0.0") -> dict:
    return {
        "id": model_id, "version": version, "task": "myelin-psr", "title": "Test PSR model",
        "description": "tiny weights for tests", "inputs": ["t1w", "flair"], "outputs": ["psr"],
        "spacing": [2.0, 2.0, 2.0], "multiple": 8,
        "normalisation": {"inputs": {"method": "percentile", "low": 1.0, "high": 99.0},
                          "outputs": {"psr": {"scale": 0.1, "offset": 0.05}}},
        "architecture": {"autoencoder": {"channels": [8, 16]}}, "licence": "Apache-2.0",
        "training": {"data": "phantoms", "command": "pytest", "duration_s": 0.0, "hardware": "cpu", "seeds": [0]},
        "metrics": {},
    }


def state_dicts(seed=0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "autoencoder_psr": {"encoder.weight": torch.randn(4, 2, 3, 3, 3, generator=generator),
                            "encoder.bias": torch.zeros(4)},
        "diffusion": {"unet.weight": torch.randn(8, 4, generator=generator)},
    }


def snapshot(root: Path) -> dict:
    """Every path below ``root`` with its bytes (None for folders)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (root folder, base URL)."""
    for name in ("NO_PROXY", "no_proxy"):  # never route the loopback server through a configured proxy
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MRISYNTHESIS_HOME", str(home))
    return home


def registry(home: Path, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(home=home, bundled_dir=tmp_path / "bundled")


def publish(root: Path, model_id="test-psr", version="1.0.0", seed=0, sub="m") -> ModelCard:
    return write_model(root / sub / model_id, card_fields(model_id, version), state_dicts(seed))


# ------------------------------------------------------------------------------------------------ cards
def test_write_model_card_roundtrip(tmp_path):
    card = publish(tmp_path)
    assert card.folder == tmp_path / "m" / "test-psr"
    assert {f.stem for f in card.files} == {"autoencoder_psr", "diffusion"}
    for entry in card.files:
        data = (card.folder / entry.name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.size
    again = ModelCard.from_file(card.folder)
    assert again == card and again.output_affine("psr") == (0.1, 0.05) and again.spacing == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d.pop("licence"), "missing required field 'licence'"),
    (lambda d: d.update(multiple=0), "multiple: must be >= 1"),
    (lambda d: d.update(spacing=[1.0, 1.0]), "spacing: needs at least 3"),
    (lambda d: d.update(id="../evil"), "id:"),
    (lambda d: d.update(licnce="typo"), "licnce: unknown field"),
    (lambda d: d["files"][0].update(sha256="abc"), "files[0].sha256"),
    (lambda d: d["files"][0].update(name="model.pt"), "only safetensors"),
    (lambda d: d["normalisation"]["outputs"].pop("psr"), "no scale/offset for output(s) psr"),
])
def test_invalid_cards_are_refused_with_the_field_named(tmp_path, change, fragment):
    data = json.loads((publish(tmp_path).folder / "card.json").read_text())
    change(data)
    with pytest.raises(InputError, match="card.json") as info:
        ModelCard.from_dict(data, name="card.json")
    assert fragment in str(info.value)


def test_write_model_refuses_oversized_and_bad_card_without_writing(tmp_path):
    with pytest.raises(InputError, match="over the 0.0001 MB limit"):
        write_model(tmp_path / "a", card_fields(), state_dicts(), max_file_mb=0.0001)
    bad = card_fields()
    bad["multiple"] = -1
    with pytest.raises(InputError, match="multiple"):
        write_model(tmp_path / "b", bad, state_dicts())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------ install
def test_install_from_url_then_load(server, home, tmp_path):
    root, base = server
    published = publish(root)
    reg = registry(home, tmp_path)
    assert not reg.is_installed("test-psr")
    seen = []
    card = reg.install(f"{base}/m/test-psr/card.json", progress=lambda name, done, total: seen.append((name, done, total)))
    assert card.source == "user" and card.folder == home / "models" / "test-psr"
    assert reg.is_installed("test-psr") and [c.id for c in reg.list()] == ["test-psr"]
    assert ("diffusion.safetensors", published.file("diffusion").size, published.file("diffusion").size) in seen
    assert (card.folder / "card.json").read_bytes() == (published.folder / "card.json").read_bytes()
    loaded = reg.load_state_dicts("test-psr")
    expected = state_dicts()
    assert set(loaded) == set(expected)
    for stem, tensors in expected.items():
        for key, value in tensors.items():
            assert torch.equal(loaded[stem][key], value)
    assert not [p for p in (home / "models").iterdir() if p.name.startswith(".")]  # no staging left


def test_install_with_weight_urls_in_card_and_card_pin(server, home, tmp_path):
    root, base = server
    published = publish(root)
    # Card served elsewhere; weights referenced by relative and absolute URLs.
    data = json.loads((published.folder / "card.json").read_text())
    data["files"][0]["url"] = "../m/test-psr/" + data["files"][0]["name"]
    data["files"][1]["url"] = f"{base}/m/test-psr/{data['files'][1]['name']}"
    (root / "cards").mkdir()
    raw = json.dumps(data).encode()
    (root / "cards" / "card.json").write_bytes(raw)
    reg = registry(home, tmp_path)
    with pytest.raises(InputError, match="card sha256"):
        reg.install(f"{base}/cards/card.json", sha256="0" * 64)
    assert not home.exists()  # a refused first install leaves no trace
    card = reg.install(f"{base}/cards/card.json", sha256=hashlib.sha256(raw).hexdigest())
    reg.verify(card.id)


def test_tampered_or_resized_weight_is_refused_and_cache_unchanged(server, home, tmp_path):
    root, base = server
    publish(root, version="1.0.0")
    reg = registry(home, tmp_path)
    reg.install(f"{base}/m/test-psr/card.json")
    before = snapshot(home)
    # v2 published, then one weight file tampered with after its card was written.
    published = publish(root, version="2.0.0", seed=1, sub="v2")
    weight = published.folder / "diffusion.safetensors"
    data = bytearray(weight.read_bytes())
    data[-1] ^= 0xFF
    weight.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 .* does not match"):
        reg.install(f"{base}/v2/test-psr/card.json")
    assert snapshot(home) == before
    weight.write_bytes(bytes(data) + b"\0")  # wrong size is refused too
    with pytest.raises(InputError, match="bytes"):
        reg.install(f"{base}/v2/test-psr/card.json")
    assert snapshot(home) == before
    assert reg.card("test-psr").version == "1.0.0"
    # once the server has the right file, the update replaces v1 atomically
    publish(root, version="2.0.0", seed=1, sub="v2")
    assert reg.install(f"{base}/v2/test-psr/card.json").version == "2.0.0"
    assert sorted(p.name for p in (home / "models").iterdir()) == ["test-psr"]


def test_http_404_and_pickle_weights_are_refused(server, home, tmp_path):
    root, base = server
    reg = registry(home, tmp_path)
    with pytest.raises(InputError, match="HTTP 404"):
        reg.install(f"{base}/nothing/card.json")
    published = publish(root)
    (published.folder / "diffusion.safetensors").unlink()  # card points to a file the server lacks
    with pytest.raises(InputError, match="HTTP 404"):
        reg.install(f"{base}/m/test-psr/card.json")
    data = json.loads((published.folder / "card.json").read_text())
    data["files"][0]["name"] = "model.pt"
    (published.folder / "card.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="only safetensors"):
        reg.install(f"{base}/m/test-psr/card.json")
    assert not home.exists()


def test_fake_safetensors_with_matching_hash_is_refused(tmp_path, home):
    folder = publish(tmp_path).folder
    fake = b"\x00" * 100  # right name, right hash in the card, but not a safetensors file
    (folder / "diffusion.safetensors").write_bytes(fake)
    data = json.loads((folder / "card.json").read_text())
    data["files"][1].update(sha256=hashlib.sha256(fake).hexdigest(), size=len(fake))
    (folder / "card.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="not a safetensors file"):
        registry(home, tmp_path).install(folder)


def _raw_safetensors(header: dict, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return len(encoded).to_bytes(8, "little") + encoded + data


@pytest.mark.parametrize("content, reason", [
    # a header claiming 4 float32 values (16 bytes) over 8 bytes of data: structurally plausible, not loadable
    (_raw_safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\x00" * 8), "invalid"),
    (_raw_safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, b"\x00" * 8), "invalid"),
    (b"\x00" * 100, "header"),
], ids=["16-bytes-claimed-over-8", "range-past-end-of-file", "zeros"])
def test_weights_that_safetensors_cannot_load_are_refused(tmp_path, home, content, reason):
    folder = publish(tmp_path).folder
    (folder / "diffusion.safetensors").write_bytes(content)
    data = json.loads((folder / "card.json").read_text())
    data["files"][1].update(sha256=hashlib.sha256(content).hexdigest(), size=len(content))
    (folder / "card.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=f"not a safetensors file .*{reason}"):
        registry(home, tmp_path).install(folder)
    assert not (home / "models" / "test-psr").exists()


def test_install_from_local_folder_and_card_path(tmp_path, home):
    folder = publish(tmp_path).folder
    reg = registry(home, tmp_path)
    assert reg.install(folder).version == "1.0.0"
    assert reg.install(folder / "card.json").version == "1.0.0"
    with pytest.raises(InputError, match="not a .safetensors file|not a plain"):
        reg.install(folder / "diffusion.safetensors")
    assert snapshot(folder)  # the source folder is untouched
    assert ModelCard.from_file(folder) == reg.card("test-psr")


# ------------------------------------------------------------------------------------------------ lookup
def test_verify_detects_corruption_and_load_refuses(tmp_path, home):
    reg = registry(home, tmp_path)
    card = reg.install(publish(tmp_path).folder)
    path = card.folder / "autoencoder_psr.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="autoencoder_psr.safetensors sha256 does not match"):
        reg.verify("test-psr")
    with pytest.raises(InputError, match="failed verification"):
        reg.load_state_dicts("test-psr")
    path.unlink()
    with pytest.raises(InputError, match="missing"):
        reg.verify("test-psr")


def test_missing_model_error_names_install_command(tmp_path, home):
    reg = registry(home, tmp_path)
    with pytest.raises(ModelNotInstalledError, match=r"'nope' is not installed.*mrisynthesis models install <URL"):
        reg.card("nope")
    with pytest.raises(ModelNotInstalledError):
        reg.load_state_dicts("nope")
    assert not reg.is_installed("nope") and not reg.is_installed("../etc")
    with pytest.raises(InputError, match="not a valid model id"):
        reg.card("../etc")


def test_bundled_lookup_catalog_download_and_remove(server, home, tmp_path):
    root, base = server
    published = publish(root)
    bundled = tmp_path / "bundled"
    # a complete bundled model and a catalog card whose weights must be downloaded
    shutil.copytree(published.folder, bundled / "test-psr")
    catalog = json.loads((published.folder / "card.json").read_text())
    catalog["id"] = "remote-psr"
    for entry in catalog["files"]:
        entry["url"] = f"{base}/m/test-psr/{entry['name']}"
    (bundled / "remote-psr").mkdir()
    (bundled / "remote-psr" / "card.json").write_text(json.dumps(catalog))
    reg = ModelRegistry(home=home, bundled_dir=bundled)
    assert reg.is_installed("test-psr") and reg.card("test-psr").source == "bundled"
    assert not reg.is_installed("remote-psr")
    with pytest.raises(ModelNotInstalledError, match="mrisynthesis models install remote-psr$"):
        reg.card("remote-psr")
    assert [c.id for c in reg.list()] == ["test-psr"]
    assert [c.id for c in reg.list(include_available=True)] == ["remote-psr", "test-psr"]
    assert reg.install("remote-psr").source == "user"
    assert reg.load_state_dicts("remote-psr").keys() == {"autoencoder_psr", "diffusion"}
    assert reg.install("test-psr").source == "bundled"  # already there: nothing copied
    with pytest.raises(InputError, match="cannot be removed"):
        reg.remove("test-psr")
    # a user copy overrides the bundled one; removing it falls back to bundled
    reg.install(publish(tmp_path, version="9.0.0").folder)
    assert reg.card("test-psr").version == "9.0.0" and reg.card("test-psr").source == "user"
    reg.remove("test-psr")
    assert reg.card("test-psr").source == "bundled"
    reg.remove("remote-psr")
    assert not reg.is_installed("remote-psr")
    with pytest.raises(ModelNotInstalledError):
        reg.remove("remote-psr")


def test_home_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("MRISYNTHESIS_HOME", str(tmp_path / "env"))
    assert ModelRegistry().models_dir == tmp_path / "env" / "models"
    assert ModelRegistry(home=tmp_path / "arg").models_dir == tmp_path / "arg" / "models"
    monkeypatch.delenv("MRISYNTHESIS_HOME")
    assert ModelRegistry().models_dir == Path.home() / ".mrisynthesis" / "models"


def test_download_file_url_checks_hash(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 5000)
    target = tmp_path / "out" / "dst.bin"
    target.parent.mkdir()
    with pytest.raises(InputError, match="sha256"):
        download(source.as_uri(), target, expected_sha256="0" * 64)
    assert list(target.parent.iterdir()) == []
    sha, size = download(source.as_uri(), target, expected_sha256=hashlib.sha256(b"x" * 5000).hexdigest())
    assert size == 5000 and target.read_bytes() == b"x" * 5000


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_models_commands(server, home, capsys):
    root, base = server
    published = publish(root)
    url = f"{base}/m/test-psr/card.json"
    assert main(["models", "list"]) == 0
    assert main(["models", "install", "--quiet", url]) == 0
    assert main(["models", "verify"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["cache"] == str(home / "models")
    user_models = [(m["id"], m["source"], m["status"]) for m in listing["models"] if m["source"] == "user"]
    assert user_models == [("test-psr", "user", "installed")]  # bundled models are listed too
    assert main(["models", "path"]) == 0 and capsys.readouterr().out.strip() == str(home / "models")
    assert main(["tasks"]) == 0 and "myelin-psr" in capsys.readouterr().out
    # exit 2: tampered download, wrong pin, bad source; exit 3: not installed
    weight = published.folder / "diffusion.safetensors"
    weight.write_bytes(weight.read_bytes()[:-1] + b"\x01")
    assert main(["models", "install", "--quiet", url]) == 2
    assert main(["models", "install", "--quiet", "--sha256", "1" * 64, url]) == 2
    assert main(["models", "install", "--quiet", f"{base}/missing/card.json"]) == 2
    assert main(["models", "verify", "absent"]) == 3
    assert main(["models", "remove", "absent"]) == 3
    path = home / "models" / "test-psr" / "diffusion.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\x02")
    assert main(["models", "verify", "test-psr"]) == 2
    assert main(["models", "remove", "test-psr"]) == 0
    assert not (home / "models" / "test-psr").exists()
    assert main(["models", "verify", "test-psr"]) == 3
