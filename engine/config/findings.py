"""A finding: one thing ``wanlora validate`` (or the wizard, live) tells the user about a job."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """``key`` names the knob (``datasets[0].num_frames``); ``message`` says what is wrong; ``fix`` what to do."""

    level: Level
    key: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        tail = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.level}: {self.key}: {self.message}{tail}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class JobError(Exception):
    """A job that cannot be used, with every error finding; the CLI/daemon/TUI print it at their edge."""

    def __init__(self, findings: list[Finding], source: str = "") -> None:
        self.findings = [f for f in findings if f.level == "error"] or findings
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(str(f) for f in self.findings))


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "error"]
