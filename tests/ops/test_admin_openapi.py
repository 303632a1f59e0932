"""The admin API against its own OpenAPI document (``/api/openapi.json``), by schemathesis: requests
generated from the document, sent in-process with the secret key, and every answer checked
against what the document says (status codes, content types, headers, bodies, no 5xx, the
``Allow`` of a 405). Requests the document allows but the server refuses on meaning (a campaign
that does not validate, a site key that is not the server's) are expected, so that check is off.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="a test dependency: scripts/setup --tests")

from hypothesis import HealthCheck, settings  # noqa: E402
from nudge.ops.app import create_app  # noqa: E402
from nudge.rules.campaigns import load_text  # noqa: E402
from nudge.runtime.config import Settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from ..conftest import KEY, ORIGIN  # noqa: E402

SECRET = "sk_test_openapi"
CAMPAIGNS = """
campaigns:
  - id: hello
    trigger: {event: click}
    message: {kind: toast, body: Hi}
"""

app = create_app(Settings(site_keys=[KEY], origins=[ORIGIN], secret_keys=[SECRET]), campaign_set=load_text(CAMPAIGNS, "test.yaml"))
schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
schema.config.generation.update(modes=["positive"])


@schema.exclude(path="/api/dashboard/stream").parametrize()  # never ends: tested in test_dashboard.py
@settings(max_examples=20, suppress_health_check=list(HealthCheck), deadline=None, derandomize=True)
def test_every_answer_of_the_admin_api_is_the_documented_one(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {SECRET}"}, excluded_checks=[positive_data_acceptance])
