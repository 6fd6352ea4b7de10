"""Closed vocabularies shared by the contracts (codes, never free text)."""

from __future__ import annotations

from enum import StrEnum


class ServiceCode(StrEnum):
    """Services a CPCA site may offer (data/services.csv)."""

    INITIAL_ASSESSMENT = "initial_assessment"
    RESPONSIBILITY_COURSE = "responsibility_course"
    DISCUSSION_GROUP = "discussion_group"
    PSYCHOLOGICAL_FOLLOWUP = "psychological_followup"
    PSYCHIATRIC_FOLLOWUP = "psychiatric_followup"
    ADDICTION_CARE = "addiction_care"
    SOCIAL_SUPPORT = "social_support"
    EMPLOYMENT_SUPPORT = "employment_support"
    EVICTION_HOUSING = "eviction_housing"
    PROBATIONARY_PLACEMENT = "probationary_placement"
    HELPLINE_ORIENTATION = "helpline_orientation"


class PrescriberKind(StrEnum):
    PARQUET = "parquet"
    JUGE_INSTRUCTION = "juge_instruction"
    JLD = "jld"
    TRIBUNAL_CORRECTIONNEL = "tribunal_correctionnel"
    JAP = "jap"
    SPIP = "spip"
    ASSOCIATION_SOCIO_JUDICIAIRE = "association_socio_judiciaire"
    JAF = "jaf"
    POLICE_GENDARMERIE = "police_gendarmerie"
    VOLUNTARY_LINE = "voluntary_line"
    VOLUNTARY = "voluntary"

    @property
    def is_judicial(self) -> bool:
        return self not in (PrescriberKind.VOLUNTARY_LINE, PrescriberKind.VOLUNTARY)


class JudicialFrame(StrEnum):
    ALTERNATIVE_ORIENTATION = "alternative_orientation"  # CPP 41-1 2°
    ALTERNATIVE_EVICTION = "alternative_eviction"  # CPP 41-1 6°
    COMPOSITION_PENALE = "composition_penale"  # CPP 41-2
    CRPC = "crpc"
    CONTROLE_JUDICIAIRE = "controle_judiciaire"  # CPP 138 17°
    CJPP = "cjpp"  # CPP 138 18°
    SURSIS_PROBATOIRE = "sursis_probatoire"  # CP 132-45
    RESPONSIBILITY_COURSE_PENALTY = "responsibility_course_penalty"  # CP 131-5-1
    SENTENCE_ADJUSTMENT = "sentence_adjustment"  # JAP
    PROTECTION_ORDER = "protection_order"  # civil, JAF
    VOLUNTARY = "voluntary"


class Availability(StrEnum):
    """When the person can attend (schema v2; v1 only had ``evening_only``)."""

    DAYTIME = "daytime"
    EVENING = "evening"
    WEEKEND = "weekend"


class Urgency(StrEnum):
    STANDARD = "standard"
    URGENT = "urgent"


class RejectionReason(StrEnum):
    """Why an input was not accepted. Machine-readable; the human message travels beside it."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    EMPTY_MESSAGE = "empty_message"
    MISSING_KEY = "missing_key"
    KEY_MISMATCH = "key_mismatch"
    MESSAGE_TOO_LARGE = "message_too_large"
    BAD_HEADER = "bad_header"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_ENUM_VALUE = "unknown_enum_value"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_COMMUNE = "unknown_commune"
    UNKNOWN_POSTAL_CODE = "unknown_postal_code"
    AMBIGUOUS_POSTAL_CODE = "ambiguous_postal_code"
    # The person lives where the CPCA network does not serve (a collectivité d'outre-mer).
    TERRITORY_NOT_SERVED = "territory_not_served"
    IMPOSSIBLE_DATE = "impossible_date"
    FUTURE_DATE = "future_date"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    UNKNOWN_PRESCRIBER = "unknown_prescriber"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED_MESSAGE = "replayed_message"
    OUTSIDE_JURISDICTION = "outside_jurisdiction"
    UNKNOWN_REFERRAL = "unknown_referral"
    REFERRAL_CLOSED = "referral_closed"
    RETRIES_EXHAUSTED = "retries_exhausted"
    PROCESSING_ERROR = "processing_error"
    # Routing's closed loop: a centre spoke about a referral that is not (or no longer) its own.
    NOT_OFFERED_TO_SENDER = "not_offered_to_sender"
    UNKNOWN_SITE = "unknown_site"
    # Routing's sender checks on centres.responses and directory.updates (signed like
    # referrals.intake, with keys of routing's sender registry).
    UNSIGNED = "unsigned"
    UNKNOWN_SIGNING_KEY = "unknown_signing_key"
    STALE_SIGNATURE = "stale_signature"
    NOT_THIS_CENTRE = "not_this_centre"
    ACTOR_REQUIRED = "actor_required"
