"""Validate a record's value against the published JSON Schema, as an integrator would."""

from __future__ import annotations

import json
import re
from functools import cache

import jsonschema

from aiguillage_schemas.generate import ROOT

# python-jsonschema checks "date-time" only with the optional rfc3339-validator package, which
# is not installed: this is RFC 3339's grammar (section 5.6), as ajv-formats checks it too.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time")
def _date_time(instance: object) -> bool:
    return not isinstance(instance, str) or _RFC3339.fullmatch(instance) is not None


@cache
def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    """For ``referral.submitted.v2`` and the like, from ``schemas/json``."""
    schema = json.loads((ROOT / "json" / f"{schema_name}.schema.json").read_text("utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=FORMATS)


def schema_errors(schema_name: str, value: bytes) -> list[str]:
    """Every way ``value`` breaks the published schema (empty: it is valid)."""
    document = json.loads(value)
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '-'}: {error.message}"
        for error in validator(schema_name).iter_errors(document)
    ]
