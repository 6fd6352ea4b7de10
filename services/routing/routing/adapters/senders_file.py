"""The sender registry file read at start (``data/centre_senders.json`` by default).

Which signing key speaks for whom on ``centres.responses`` and ``directory.updates``; the secrets
are settings (``AIGUILLAGE_ROUTING_SIGNING_SECRETS``), never in the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from aiguillage_common.geography import default_data_dir
from routing.domain.senders import Sender

SENDERS_FILE = "centre_senders.json"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str
    kind: Literal["portal", "centre"]
    centre_id: str | None = None


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    senders: list[_Entry]


def load_senders(path: Path | None = None) -> dict[str, Sender]:
    """The registry, by key id. A malformed file stops routing at start (ValueError)."""
    raw = json.loads((path or default_data_dir() / SENDERS_FILE).read_text("utf-8"))
    raw.pop("_doc", None)
    document = _Document.model_validate(raw)
    senders: dict[str, Sender] = {}
    for entry in document.senders:
        if entry.key_id in senders:
            raise ValueError(f"{entry.key_id} is registered twice")
        senders[entry.key_id] = Sender(entry.key_id, entry.kind, entry.centre_id)
    return senders
