"""Which languages a meeting may ask for, given the model the workers run.

The server never loads the model; it knows from the model's files (transcribe/model_catalog)
whether the model is English-only and which language codes it has, and refuses at meeting
creation what the workers could not do, naming the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import ApiError, Errors
from storage.field_rules import MAX_TRACKS, is_track_name
from transcribe.model_catalog import ModelInfo

AUTO = "auto"


class LanguageUnavailable(Exception):
    """The server's default language is not one its model has; one line to show."""


@dataclass(frozen=True)
class LanguagePolicy:
    model: ModelInfo
    default: str  # for meetings that name none: `auto` or a code

    @classmethod
    def for_model(cls, model: ModelInfo, default: str | None) -> LanguagePolicy:
        """`default` (--language) checked against the model; None: `auto` for a multilingual
        model, `en` for an English-only one."""
        policy = cls(model, model.default_language())
        if default is None:
            return policy
        try:
            return cls(model, policy._checked(default, "--language"))
        except ApiError as exc:
            raise LanguageUnavailable(exc.detail or exc.message) from None

    def _checked(self, language: object, field: str) -> str:
        """A language a meeting may use: `auto` or one of the model's codes. An English-only
        model's `auto` is English: there is nothing to detect."""
        if not isinstance(language, str) or not language:
            raise ApiError(Errors.INVALID_FIELD, f"{field} must be `auto` or a language code")
        if language == AUTO:
            return AUTO if self.model.multilingual else "en"
        if language in self.model.languages:
            return language
        if not self.model.multilingual:
            raise ApiError(
                Errors.LANGUAGE_NOT_IN_MODEL,
                f"{field} is {language[:20]!r}, but the model {self.model.name} is "
                "English-only: ask for `en` or `auto`, or run the server with a "
                "multilingual model (--model base)",
            )
        raise ApiError(
            Errors.INVALID_FIELD,
            f"{field} must be `auto` or a language code of the model {self.model.name} "
            f"(such as {', '.join(self.model.languages[:8])}), got {language[:20]!r}",
        )

    def meeting_language(self, body: dict[str, Any]) -> str:
        language = body.get("language")
        return self.default if language is None else self._checked(language, "language")

    def track_languages(self, body: dict[str, Any], tracks: list[str]) -> dict[str, str] | None:
        """`track_languages`: {"track": "de"}, for tracks whose language differs from the
        meeting's; each track must be declared when the meeting declares tracks."""
        languages = body.get("track_languages")
        if languages is None:
            return None
        if (
            not isinstance(languages, dict)
            or len(languages) > MAX_TRACKS
            or not all(is_track_name(t) for t in languages)
        ):
            raise ApiError(
                Errors.INVALID_FIELD,
                f"track_languages must be an object of up to {MAX_TRACKS} track names, each "
                "to `auto` or a language code",
            )
        undeclared = sorted(t for t in languages if tracks and t not in tracks)
        if undeclared:
            raise ApiError(
                Errors.INVALID_FIELD, f"track_languages names tracks not declared: {undeclared}"
            )
        return {
            track: self._checked(language, f"track_languages[{track!r}]")
            for track, language in languages.items()
        }
