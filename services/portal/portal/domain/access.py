"""Who may see and do what in the portal. Pure: the rules, not the lookups.

Three roles. A ``centre`` user belongs to one centre and sees only the referrals offered to or
placed at that centre's sites; a ``prescriber`` user belongs to one prescriber and sees only that
prescriber's referrals; an ``operator`` manages users and reads the portal's audit log (the
operator console of a later issue adds its pages behind ``may_operate``). Anything a user may not
see is reported to them as not existing (404), so that ids cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

Role = Literal["centre", "prescriber", "operator"]
ROLES: tuple[Role, ...] = ("centre", "prescriber", "operator")
ActorKind = Literal["centre_user", "operator"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user, as the rules need them."""

    user_id: UUID
    role: Role
    centre_id: str | None = None
    prescriber_id: str | None = None

    @property
    def actor_id(self) -> str:
        """Pseudonymous id published in events' ``actor``: never a name or an e-mail."""
        return f"u:{self.user_id}"

    @property
    def actor_kind(self) -> ActorKind:
        return "operator" if self.role == "operator" else "centre_user"


@dataclass(frozen=True, slots=True)
class ReferralView:
    """What the rules need to know of a referral from the portal's projection."""

    referral_id: str
    prescriber_id: str | None
    status: str
    centre_id: str | None
    site_id: str | None
    pending_action: str | None = None

    @classmethod
    def of(cls, row: Any) -> ReferralView:
        """From a row of the projection's ``referrals`` table (a mapping by column name)."""
        return cls(
            referral_id=row["referral_id"],
            prescriber_id=row["prescriber_id"],
            status=row["status"] or "received",
            centre_id=row["centre_id"],
            site_id=row["site_id"],
            pending_action=row["pending_action"],
        )


def affiliation_problem(role: Role, centre_id: str | None, prescriber_id: str | None) -> str | None:
    """A user belongs to exactly what their role needs: one centre, one prescriber, or nothing."""
    if role == "centre" and (not centre_id or prescriber_id):
        return "un compte « centre » est rattaché à un centre et à lui seul"
    if role == "prescriber" and (not prescriber_id or centre_id):
        return "un compte « prescripteur » est rattaché à un prescripteur et à lui seul"
    if role == "operator" and (centre_id or prescriber_id):
        return "un compte « opérateur » n'est rattaché à aucun centre ni prescripteur"
    return None


def is_centre_of(principal: Principal, centre_id: str | None) -> bool:
    return principal.role == "centre" and centre_id is not None and principal.centre_id == centre_id


def may_see_offer(principal: Principal, referral: ReferralView) -> bool:
    """The centre holding the referral (offered or placed there), and only it, while it holds it:
    a declined offer re-routed elsewhere is no longer this centre's to see."""
    return referral.status in ("offered", "placed") and is_centre_of(principal, referral.centre_id)


def may_answer_offer(principal: Principal, referral: ReferralView) -> bool:
    return (
        may_see_offer(principal, referral)
        and referral.status == "offered"
        and referral.pending_action is None
    )


def may_report_path(principal: Principal, referral: ReferralView) -> bool:
    return may_see_offer(principal, referral) and referral.status == "placed"


def may_read_identity(principal: Principal, referral: ReferralView) -> bool:
    """Only the holding centre's staff; intake checks again that this centre is the holder."""
    return may_see_offer(principal, referral)


def may_see_as_prescriber(principal: Principal, prescriber_id: str | None) -> bool:
    return (
        principal.role == "prescriber"
        and prescriber_id is not None
        and principal.prescriber_id == prescriber_id
    )


def may_change_capacity(principal: Principal, site_centre_id: str) -> bool:
    return is_centre_of(principal, site_centre_id)


def is_centre(principal: Principal) -> bool:
    return principal.role == "centre"


def is_prescriber(principal: Principal) -> bool:
    return principal.role == "prescriber"


def may_operate(principal: Principal) -> bool:
    """Users, audit log (and the operator console's pages later)."""
    return principal.role == "operator"


def home_path(principal: Principal) -> str:
    return {
        "centre": "/centre/offres",
        "prescriber": "/prescripteur/orientations",
        "operator": "/operateur/utilisateurs",
    }[principal.role]


def safe_next(target: str | None) -> str | None:
    """Where to go after signing in (the deep link of an offer e-mail): a path on this site only,
    never another host (``//evil.example`` or ``https://…``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target
