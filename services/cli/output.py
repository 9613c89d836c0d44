"""Where every command prints: one rich console (it writes to whatever sys.stdout is at the time)."""
from __future__ import annotations

from rich.console import Console

console = Console()
