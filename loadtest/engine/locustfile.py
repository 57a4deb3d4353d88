"""The locustfile `loadtest run` hands to Locust: the recording user and shape, and our web UI extension.

Run it yourself for multi-host runs: ``locust -f loadtest/engine/locustfile.py --master ...`` with the
``--loadtest-run`` JSON that ``loadtest run --print-locust-command`` shows. ``engine.web_ui`` does
nothing in a headless run; under Locust's web UI (``loadtest run --web``) it adds the HDR tab and
writes a results directory for each test.
"""

import loadtest.engine.web_ui  # noqa: F401  (its event listeners)
from loadtest.engine.users import ScenarioShape, ScenarioUser

__all__ = ["ScenarioShape", "ScenarioUser"]
