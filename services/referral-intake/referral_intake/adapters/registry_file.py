"""The prescriber registry file read at start (``data/prescribers.json`` by default)."""

from __future__ import annotations

import json
from pathlib import Path

from aiguillage_common.geography import default_data_dir
from aiguillage_schemas.events.prescribers import PrescriberEntry


def load_registry_file(path: Path | None = None) -> dict[str, PrescriberEntry]:
    """The registry file (``data/prescribers.json`` shape), by prescriber id."""
    document = json.loads((path or default_data_dir() / "prescribers.json").read_text("utf-8"))
    entries = [PrescriberEntry.model_validate(item) for item in document["prescribers"]]
    return {entry.prescriber_id: entry for entry in entries}
