"""The records of an ingest run: what the caller allows (`Limits`), what one file loaded (`Loaded`)
and what the whole run did (`IngestSummary`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .. import rejects
from ..config import NULL_MARKERS


@dataclass
class IngestSummary:
    files_loaded: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    failures: list[dict] = field(default_factory=list)  # {"path", "message"}
    max_rejected_fraction: float = 0.05
    rejects: list[rejects.FileRejects] = field(default_factory=list)  # files with rejected rows

    def as_dict(self) -> dict:
        data = asdict(self)
        data["rejects"] = [r.as_dict(self.max_rejected_fraction) for r in self.rejects]
        return {**data, "ok": self.ok}

    def over_limit(self, r: rejects.FileRejects) -> bool:
        """The file's rejected share exceeds `ingest.max_rejected_fraction` (it was refused)."""
        return r.fraction > self.max_rejected_fraction

    @property
    def ok(self) -> bool:
        """True when no file failed (this run or, unchanged, an earlier one); a file whose rejected
        share exceeds `ingest.max_rejected_fraction` is refused and counts as failed."""
        return self.files_failed == 0 and not self.failures

    def problems(self) -> list[str]:
        """One message per failed file."""
        return [f["message"] for f in self.failures]

    def _fail(self, path: str, message: str) -> None:
        self.files_failed += 1
        self.failures.append({"path": path, "message": message})


@dataclass
class Loaded:
    rows_loaded: int
    rows_rejected: int
    rows_duplicate: int
    message: str | None
    digest: str | None = None
    rejects: rejects.FileRejects | None = None


@dataclass(frozen=True)
class Limits:
    """What a file may be: symlinks followed (`inbox.follow_symlinks`), at most `max_columns`
    property columns per file and per table (`ingest.max_columns`), which cell texts mean
    "missing" (`ingest.null_markers`, compared case-insensitively after trimming), the largest
    rejected share a file may have (`ingest.max_rejected_fraction`) and how the files of each
    folder or pattern are written (`ingest.formats`, see formats.py)."""

    follow_symlinks: bool = False
    max_columns: int = 200
    null_markers: tuple[str, ...] = NULL_MARKERS
    max_rejected_fraction: float = 0.05
    formats: dict = field(default_factory=dict)   # key → config.InboxFormat

    @classmethod
    def from_config(cls, config) -> "Limits":
        return cls(config.inbox.follow_symlinks, config.ingest.max_columns,
                   tuple(m.strip().lower() for m in config.ingest.null_markers),
                   config.ingest.max_rejected_fraction, dict(config.ingest.formats))
