"""`ingest.formats`: how the files of one inbox folder or file pattern are written."""
from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from .base import IDENTIFIER, Strict


FORMAT_ROOTS = ("exposures", "events")


class InboxFormat(Strict):
    """How the files of one inbox folder or file pattern are written (ingest.formats)."""

    delimiter: str | None = None
    timestamp_format: list[str] | None = None
    timezone: str | None = None
    null_values: list[str] | None = None
    columns: dict[str, str] = Field(default_factory=dict)

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        if value is not None:
            value = {"\\t": "\t", "tab": "\t"}.get(value, value)
            if len(value) != 1 or value in "\"\n\r":
                raise ValueError("expected one character such as ';', '|' or '\\t' (tab)")
        return value

    @field_validator("timestamp_format", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> Any:
        formats = [value] if isinstance(value, str) else value
        if isinstance(formats, list):
            for text in formats:
                if isinstance(text, str) and "%" not in text:
                    raise ValueError(f"'{text}' is not a strptime format; write e.g. '%d/%m/%Y %H:%M'")
        return formats

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone '{value}'; use an IANA name such as "
                                 "'Europe/Berlin' or 'UTC'") from None
        return value

    @field_validator("columns")
    @classmethod
    def _renames(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            if not IDENTIFIER.fullmatch(target):
                raise ValueError(f"'{source}: {target}': the new name must be a column name such as unit_id")
        targets = [t.lower() for t in value.values()]
        if len(set(targets)) != len(targets):
            raise ValueError("two columns are renamed to the same name")
        return value
