"""Which model and device: the bundled tiny.en and the base pack read from their own files,
a pack assembled once and checked against its recorded checksums, and the one-line refusals
for what cannot be used."""

from __future__ import annotations

import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from transcribe import model_catalog
from transcribe.engine import EngineUnavailable, choose_device
from transcribe.model_catalog import ModelPack, ModelUnavailable, describe, resolve

pytestmark = pytest.mark.storage_free


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch) -> Path:
    """Each test assembles into its own cache folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROLLSCRIBE_MODEL_CACHE", str(cache))
    return cache


def test_the_bundled_model_is_english_only() -> None:
    info = resolve(None)
    assert (info.name, info.multilingual, info.languages) == ("tiny.en", False, ("en",))
    assert info.default_language() == "en"
    assert resolve("tiny.en") == info


def test_the_base_pack_is_assembled_checked_and_multilingual(model_cache) -> None:
    info = resolve("base")
    assert info.path.parent == model_cache
    assert info.multilingual and info.default_language() == "auto"
    assert {"en", "de", "es", "fr", "ja"} <= set(info.languages)
    assert len(info.languages) == 99
    assert (info.path / "model.bin").stat().st_size == 145_217_607
    # A second start uses the folder as it is.
    before = (info.path / "model.bin").stat().st_mtime_ns
    assert resolve("base").path == info.path
    assert (info.path / "model.bin").stat().st_mtime_ns == before


def test_servers_and_workers_starting_together_assemble_one_folder(model_cache) -> None:
    with ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(lambda _: resolve("base").path, range(4)))
    assert len(paths) == 1
    assert [p.name for p in model_cache.iterdir()] == [paths.pop().name]  # no scratch left


def _fake_pack(root: Path, monkeypatch, model_bin: bytes) -> ModelPack:
    """A pack of two packages on sys.path, model.bin split across them."""
    tiny = model_catalog.bundled_dir()
    for n, part in enumerate((model_bin[:5], model_bin[5:]), start=1):
        data = root / f"fakepack_{n}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"model.bin.part{n}").write_bytes(part)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(tiny / name, root / "fakepack_2" / "data" / name)
    monkeypatch.syspath_prepend(str(root))
    sha = {
        name: hashlib.sha256((tiny / name).read_bytes()).hexdigest()
        for name in ("config.json", "tokenizer.json", "vocabulary.txt")
    }
    return ModelPack(
        "fake",
        "fake",
        ("fakepack_1", "fakepack_2"),
        {**sha, "model.bin": hashlib.sha256(b"0123456789").hexdigest()},
    )


def test_a_pack_is_joined_in_part_order(tmp_path, monkeypatch) -> None:
    pack = _fake_pack(tmp_path / "site", monkeypatch, b"0123456789")
    monkeypatch.setitem(model_catalog.PACKS, "fake", pack)
    info = resolve("fake")
    assert (info.path / "model.bin").read_bytes() == b"0123456789"
    assert info.languages == ("en",)


def test_a_pack_whose_files_differ_from_the_recorded_checksums_is_refused(
    tmp_path, monkeypatch, model_cache
) -> None:
    pack = _fake_pack(tmp_path / "site", monkeypatch, b"0123456780")  # one byte changed
    monkeypatch.setitem(model_catalog.PACKS, "fake", pack)
    with pytest.raises(ModelUnavailable, match=r"does not match its recorded checksums \(model"):
        resolve("fake")
    assert list(model_cache.iterdir()) == []  # nothing half-made is left to be used later


def test_a_pack_not_installed_says_which_extra_installs_it(monkeypatch) -> None:
    pack = ModelPack("gone", "gone", ("no_such_package_here",), {})
    monkeypatch.setitem(model_catalog.PACKS, "gone", pack)
    with pytest.raises(ModelUnavailable, match=r"not installed: pip install 'rollscribe\[gone\]'"):
        resolve("gone")


@pytest.mark.parametrize(
    "name, says",
    [
        ("small", "model 'small' has no offline pack"),
        ("large-v3", "model 'large-v3' has no offline pack"),
        ("whisper-nope", "unknown model 'whisper-nope': give one of tiny.en, base"),
    ],
)
def test_names_without_a_model_are_refused_in_one_line(name, says) -> None:
    with pytest.raises(ModelUnavailable, match=says) as refused:
        resolve(name)
    assert "\n" not in str(refused.value)


def test_an_incomplete_folder_names_what_it_lacks(tmp_path) -> None:
    folder = tmp_path / "half"
    folder.mkdir()
    shutil.copy(model_catalog.bundled_dir() / "config.json", folder)
    (folder / "model.bin").write_bytes(b"")
    with pytest.raises(ModelUnavailable) as refused:
        resolve(str(folder))
    assert str(refused.value) == (
        f"model folder {folder} is incomplete: missing model.bin, tokenizer.json, "
        "vocabulary.json or vocabulary.txt"
    )


def test_an_unreadable_folder_is_refused(tmp_path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(model_catalog.bundled_dir(), folder, ignore=shutil.ignore_patterns("model.bin"))
    (folder / "model.bin").write_bytes(b"x")
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelUnavailable, match="is unreadable"):
        describe("broken", folder)


def test_the_catalog_lists_each_model_with_where_it_is() -> None:
    entries = {e.name: e for e in model_catalog.catalog()}
    assert entries["tiny.en"].installed and "English" in entries["tiny.en"].note
    assert entries["base"].installed and "multilingual (99 languages)" in entries["base"].note
    assert entries["base"].path is not None and (entries["base"].path / "model.bin").exists()


@pytest.mark.parametrize(
    "requested, compute_type, gpus, device, chosen_type, reason",
    [
        ("auto", None, 0, "cpu", "int8", "auto: CTranslate2 sees no CUDA device"),
        ("auto", None, 2, "cuda", "float16", "auto: CTranslate2 sees 2 CUDA device(s)"),
        ("cpu", None, 1, "cpu", "int8", "asked for"),
        ("cuda", None, 1, "cuda", "float16", "asked for"),
        ("cpu", "float32", 0, "cpu", "float32", "asked for"),
    ],
)
def test_device_choice(requested, compute_type, gpus, device, chosen_type, reason) -> None:
    choice = choose_device(requested, compute_type, gpus)
    assert (choice.device, choice.compute_type, choice.reason) == (device, chosen_type, reason)


def test_cuda_without_a_gpu_and_unknown_devices_are_refused() -> None:
    with pytest.raises(EngineUnavailable, match="CTranslate2 sees no CUDA device"):
        choose_device("cuda", None, 0)
    with pytest.raises(EngineUnavailable, match="unknown device 'tpu'"):
        choose_device("tpu", None, 0)
