"""The JSON Schema shipped for editors agrees with the loader on what a campaign file is."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from nudge.cli import main
from nudge.errors import CampaignError
from nudge.rules.campaigns import load_text
from nudge.runtime.config import DEMO_CAMPAIGNS, PACKAGE

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((PACKAGE / "schema" / "campaigns.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def documented() -> list[str]:
    text = (ROOT / "docs" / "campaigns.md").read_text()
    return [m.group(1) for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.M | re.S)]


def test_the_schema_is_a_valid_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_shipped_and_documented_file_validates():
    files = [DEMO_CAMPAIGNS.read_text(), (ROOT / "examples" / "production.yaml").read_text(), *documented()]
    for text in files:
        errors = list(VALIDATOR.iter_errors(yaml.safe_load(text)))
        assert errors == [], [e.message for e in errors]


@pytest.mark.parametrize(
    "campaign",
    [
        {"id": "a", "trigger": {"evnt": "click"}, "message": {"kind": "toast", "title": "x"}},
        {"id": "a", "trigger": {"event": "click"}, "message": {"kind": "popup", "title": "x"}},
        {"id": "a", "trigger": {"event": "click"}, "caps": {"per_day": 0}, "message": {"kind": "toast", "title": "x"}},
        {"id": "a", "trigger": {"scroll": 150}, "message": {"kind": "toast", "title": "x"}},
        {"id": "a", "trigger": {"event": "click"}, "message": {"kind": "toast", "title": "x", "cta": {"label": "go", "url": "javascript:x"}}},
        {"id": "a", "trigger": {"event": "click"}, "message": {"kind": "toast", "title": "x", "cta": {"label": "go", "url": "//evil.example"}}},
        {"id": "a", "trigger": {"event": "click"}, "message": {"kind": "toast", "title": "x", "cta": {"label": "go", "url": "/\\evil.example"}}},
        {"id": "a", "trigger": {"event": "click"}, "message": {"kind": "toast", "title": "x", "cta": {"label": "go", "url": "/\t/evil.example"}}},
        {"id": "a", "trigger": {"absent": "purchase"}, "message": {"kind": "toast", "title": "x"}},
        {"id": "a", "trigger": {"event": "click"}, "audience": {"vistor.plan": "pro"}, "message": {"kind": "toast", "title": "x"}},
        {"id": "A B", "trigger": {"event": "click"}, "message": {"kind": "toast", "title": "x"}},
    ],
)
def test_invalid_campaigns_fail_both_the_schema_and_the_loader(campaign):
    document = {"campaigns": [campaign]}
    assert list(VALIDATOR.iter_errors(document)), "the schema accepted it"
    with pytest.raises(CampaignError):
        load_text(json.dumps(document))


def test_nudge_schema_prints_it(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Nudge campaign file"
