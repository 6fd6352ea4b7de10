"""Who may submit referrals: the effective prescriber registry, and the jurisdiction rule.

Pure. The registry file gives the entries known at start; registry events stored in the database
replace entries one prescriber at a time (a stored entry always wins over the file's, including a
revocation), so rotating a key or revoking a prescriber never needs a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiguillage_common.codec import Problem
from aiguillage_schemas.events.prescribers import PrescriberEntry
from aiguillage_schemas.vocabulary import RejectionReason


def effective_entry(
    key_id: str, from_file: Mapping[str, PrescriberEntry], stored: Iterable[PrescriberEntry]
) -> PrescriberEntry | None:
    """The active entry whose signing key is ``key_id`` once stored updates override the file.

    ``stored`` must hold every stored entry for the prescribers concerned (those with ``key_id``
    in the file or in the database), so that a rotation or revocation is seen.
    """
    merged = dict(from_file)
    merged.update({entry.prescriber_id: entry for entry in stored})
    for entry in merged.values():
        if entry.signing_key_id == key_id and entry.active:
            return entry
    return None


def outside_jurisdiction(entry: PrescriberEntry, residence_departement: str) -> Problem | None:
    """A prescriber refers people living in its jurisdiction; a national one anybody."""
    jurisdiction = entry.jurisdiction
    if jurisdiction.national or residence_departement in jurisdiction.departements:
        return None
    return Problem(
        RejectionReason.OUTSIDE_JURISDICTION,
        f"the residence département is outside the jurisdiction of {entry.prescriber_id}",
        "data.person.residence",
        entry.prescriber_id,
    )
