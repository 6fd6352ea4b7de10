"""The committed JSON Schemas and AsyncAPI documents match the code."""

from __future__ import annotations

import json

import jsonschema

from aiguillage_demo.samples import make_referral
from aiguillage_schemas.generate import ROOT, stale_files


def test_generated_files_are_up_to_date() -> None:
    assert stale_files() == [], "run `aiguillage-schemas` and commit the result"


def test_a_sample_referral_validates_against_the_published_schema() -> None:
    schema = json.loads((ROOT / "json" / "referral.submitted.v2.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(make_referral(4).model_dump(mode="json"))
