"""The locustfile `loadtest run` hands to Locust. It only imports the recording user and shape.

Run it yourself for multi-host runs: ``locust -f loadtest/engine/locustfile.py --master ...`` with the
``--loadtest-run`` JSON that ``loadtest run --print-locust-command`` shows.
"""

from loadtest.engine.users import ScenarioShape, ScenarioUser

__all__ = ["ScenarioShape", "ScenarioUser"]
