"""Locust glue: the recording user, the scenario's shape, and the events that move measurements.

Import this module into a locustfile (``loadtest/engine/locustfile.py`` does only that) and Locust runs a
scenario with our recording: ``ScenarioUser`` sends, ``ScenarioShape`` sets the user count, and
event listeners carry each worker's histogram deltas to the master (``report_to_master`` and
``worker_report``), which merges them and writes the results at ``quitting``: by then every
worker has sent its final report, which is not yet true at ``test_stop``.

Open load: each Locust worker runs one ``ScenarioUser``, whose task is a scheduler. It walks the
worker's share of the global arrival schedule, sleeps until each intended time (coarse gevent
sleep, then re-checking the clock, since timers fire early and libev resolves about 1 ms), and
spawns the request on its own greenlet. If ``max_in_flight`` requests are already outstanding,
the arrival is counted as dropped, never silently skipped. Closed load: ``ScenarioShape`` sets the
number of users over time, and each user sends, waits for its answer, thinks, and repeats.

The run configuration arrives as the custom option ``--loadtest-run`` (JSON), which Locust's
master forwards to every worker in its spawn message, so workers on other hosts need no files.
The target URL in it has its password redacted (it is on a command line); the users send to the
real one, from the environment (``TARGET_URL_ENV``).

The wire is a transport's (``engine.transports``): HTTP through the user's ``FastHttpSession``, or OIP
v2 over gRPC (``oip-v2-grpc``) on one channel per process. Everything else here, the schedule,
lateness, the accounting and the messy verdicts, is the same for both.

Redirects are not followed: a 3xx is the target's answer, recorded under its status (``http_307``),
as wrk2 and perf_analyzer do. Following one would send load to a host the preflight never checked
(the loopback guard), and time two requests as one.

Under Locust's web UI (``loadtest run --web``, ``engine.web_ui``) a process runs one test after
another: each writes its own directory when it stops, and ``RunState.next_test`` clears what the
next one must start without (the schedule walked, the shape's verdict, the histograms).

A worker lost mid-run (killed, crashed, cut off) is noticed by Locust's own heartbeat: after
``HEARTBEAT_LIVENESS`` missed beats the master marks it missing. The master then stops waiting for
it, and at the end counts the part of its share of the schedule it never reported as ``lost_worker``
(the master knows the whole schedule and how it is partitioned), and records which worker was lost
and when its last report came (``run.lost_workers``), so the run fails with one line instead of
idling to the hard stop and reading as interrupted. Locust may hand a lost worker's user to a
surviving worker: a process walks its share of the schedule once, so that user only waits.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from gevent.lock import BoundedSemaphore, Semaphore
from gevent.pool import Group
from locust import LoadTestShape, events, runners, task
from locust.contrib.fasthttp import FastHttpUser
from locust.runners import STATE_MISSING, STATE_RUNNING, STATE_SPAWNING, LocalRunner, MasterRunner, WorkerRunner

from loadtest.engine.collector import Collector, quick_percentiles
from loadtest.engine.measurements import write_results
from loadtest.engine.recorder import OK, Recorder
from loadtest.engine.runconfig import (
    TARGET_URL_ENV,
    RunConfig,
    build_messy,
    build_payloads,
    build_replay,
    token_counter,
)
from loadtest.engine.transports import Transport, transport_for
from loadtest.messy.kinds import CLASS_PREFIX, CORRECT, WRONG, MessyRequest
from loadtest.messy.picks import MessyPool
from loadtest.messy.verdicts import verdict
from loadtest.replay.schedule import Arrival, schedule
from loadtest.results.directory import replay_target
from loadtest.results.files import write_atomic
from loadtest.results.summary import ALL
from loadtest.traffic.arrivals import arrival_times, partition
from loadtest.traffic.payloads import Payload

runners.WORKER_REPORT_INTERVAL = 1.0  # deltas every second, so the master's progress is current
LATE_SLEEP = 0.002  # below this much time left, stop sleeping coarsely and re-check the clock
SILENT_S = 3.0  # a worker silent this much longer than the others at the end is lost (Locust's HEARTBEAT_LIVENESS)


@dataclass
class RunState:
    """Everything one Locust process knows about the run; built once per process."""

    config: RunConfig
    environment: object = None  # Locust's Environment of this process
    worker_index: int = 0
    workers: int = 1  # Locust workers sharing the schedule (--expect-workers; 1 in one process)
    local: bool = False  # one process: the collector pulls from this process's recorder
    recorder: Recorder | None = None
    collector: Collector | None = None
    done: bool = False
    started: float = field(default_factory=time.perf_counter)
    started_epoch: float = field(default_factory=time.time)
    closed_sent: int = 0
    complete: bool = False  # the shape ended the run on schedule (not Ctrl-C, not the hard stop)
    scheduling: bool = False  # an open-load scheduler walks this process's share (one per process and test)
    web: bool = False  # under Locust's web UI: tests one after another, each written when it stops
    stopping: bool = False  # the test is being stopped (Ctrl-C, SIGTERM, the web UI): nothing more is sent
    tests: int = 0  # web UI: tests started so far
    test_dir: Path | None = None  # web UI: where the current test's measurements go
    progress: object = None  # the master's progress greenlet, one per process
    lost: dict[str, float] = field(default_factory=dict)  # master: missing worker -> its last report (s since start)
    pull_lock: Semaphore = field(default_factory=Semaphore)
    _payloads: tuple | None = None
    _target: list[int] | None = None  # a replay's intended sends per second, read once
    _messy: object = None  # the messy pool, built once per process; False when the scenario has none
    transports: dict = field(default_factory=dict)  # what this process's users share: the gRPC channel

    def next_test(self) -> None:
        """Web UI: clear what the test just written leaves behind, so the next one starts as the first did.

        The collector stays, so the web UI shows the last test's figures until the next starts
        (``new_collector`` at its ``test_start``): the shape asks ``tick`` before that event fires.
        """
        self.done = self.complete = self.scheduling = self.stopping = False
        self.closed_sent = 0
        self.lost = {}
        self.recorder = None

    def new_collector(self) -> None:
        if self.collector is not None:
            self.collector = Collector()

    def messy(self) -> MessyPool | None:
        if self._messy is None:
            self._messy = build_messy(self.config) or False
        return self._messy or None

    def target_at(self, t: float) -> float:
        """The intended rate (or users) at ``t``: the shape's, or a replay's intended sends in that second."""
        if not self.config.replay:
            return self.scenario.load.shape.at(t)
        if self._target is None:
            self._target = replay_target(self.config.out_dir)
        second = int(t)
        return float(self._target[second]) if 0 <= second < len(self._target) else 0.0

    @property
    def scenario(self):
        return self.config.scenario

    def payloads(self) -> tuple:
        """(protocol, payload pool), built once per process and shared by its users."""
        if self._payloads is None:
            self._payloads = build_payloads(self.config)
        return self._payloads


_STATE: RunState | None = None


def run_state(environment) -> RunState:
    global _STATE
    if _STATE is None:
        raw = getattr(environment.parsed_options, "loadtest_run", None) or os.environ.get("LOADTEST_RUN", "")
        if not raw:
            raise RuntimeError("no run configuration: start through `loadtest run`, or pass --loadtest-run")
        config = RunConfig.from_json(raw)
        runner = environment.runner
        state = RunState(config, environment=environment)
        if isinstance(runner, WorkerRunner | MasterRunner):
            state.workers = max(1, int(getattr(environment.parsed_options, "expect_workers", 1) or 1))
        if isinstance(runner, WorkerRunner):
            state.worker_index = max(0, runner.worker_index)
        if isinstance(runner, MasterRunner | LocalRunner):
            state.collector = Collector()
        state.local = isinstance(runner, LocalRunner)
        state.web = getattr(environment, "web_ui", None) is not None
        _STATE = state
    return _STATE


def messy_payload(request: MessyRequest) -> Payload:
    return Payload(
        CLASS_PREFIX + request.kind,
        request.body,
        headers={"Content-Type": request.content_type},
        expect=request.expect,
        twin=request.twin,
        hang_up=request.hang_up,
    )


def judge_answer(recorder: Recorder, payload: Payload, intended: float, kind: str, answer: str) -> str:
    """A messy request's answer judged against its kind's expectation; the kind the recorder gets back.

    A correct answer (a 4xx or a gRPC refusal for garbage, a 200 for edge-case text) is a success of its
    class, so its latency is recorded and it never counts as an error of the run; a wrong one is an error
    named ``wrong_<answer>`` (``answer``: ``http_200``, ``grpc_ok``...); a defect keeps its own kind
    (http_500, grpc_internal, timeout, connection).
    """
    found = verdict(payload.expect, kind)
    recorder.judged(payload.cls, intended, f"{found}:{payload.expect}:{answer}")
    if found == CORRECT:
        return OK
    return f"wrong_{answer}" if found == WRONG else kind


def _yield() -> None:
    gevent.sleep(0)


def sleep_until(deadline: float) -> None:
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return
        gevent.sleep(left - LATE_SLEEP / 2 if left > LATE_SLEEP else 0)


class ScenarioUser(FastHttpUser):
    """Sends the scenario's requests and records them; works for open and closed load."""

    max_redirects = 0  # a 3xx is the answer (see the module's docstring)

    def __init__(self, environment) -> None:
        state = run_state(environment)
        load = state.scenario.load
        # FastHttpUser builds its connection pool from these in __init__: set them first.
        self.concurrency = load.pool
        self.network_timeout = self.connection_timeout = load.timeout
        # The URL with its credentials (FastHttpSession sends them as basic auth); --host has none.
        self.host = os.environ.get(TARGET_URL_ENV) or environment.host or self.host
        super().__init__(environment)
        self.state, self.load = state, load
        self.protocol, self.payloads = state.payloads()
        self.transport: Transport = transport_for(
            self.protocol, self.client, state.transports, self.host, load.timeout, environment.events
        )

    def wait_time(self) -> float:
        if self.state.done or (self.load.model == "open" and self.state.scheduling):
            return 3600.0  # the schedule is sent or being sent: wait outside the task, where a stop ends us at once
        return self.load.think_time

    @task
    def work(self) -> None:
        if self.load.model == "open":
            if not self.state.scheduling:  # a second user in this process (a lost worker's, handed over) only waits
                self.state.scheduling = True
                self.run_schedule()
        else:
            self.closed_request()

    def _send(self, recorder: Recorder, payload, intended: float, connections: BoundedSemaphore) -> None:
        """Send one request of the open-load schedule (closed load sends in ``closed_request``)."""
        timeout = self.load.timeout
        if not connections.acquire(timeout=timeout):
            recorder.unsent(payload.cls, intended, time.perf_counter())
            return
        try:
            actual = time.perf_counter()
            recorder.sent(payload.cls, intended, actual)
            # geventhttpclient's timeout is per socket operation; this guard bounds the whole request,
            # so every request ends within a known time and the drain at the end always completes.
            answer = None
            with gevent.Timeout(2 * timeout + 1, False):
                answer = self.transport.send(payload)
            done = time.perf_counter()
        finally:
            connections.release()
        kind, timing, named = self.transport.outcome(payload, answer)
        if payload.expect is not None:
            kind = judge_answer(recorder, payload, intended, kind, named)
        elif (stream := self.transport.stream(answer, done)) is not None:
            recorder.streamed(
                payload.cls, intended, done, stream, kind == OK, payload.max_tokens, payload.prompt_tokens
            )
        recorder.completed(payload.cls, intended, actual, done, kind, timing)

    def run_schedule(self) -> None:
        state, load = self.state, self.state.scenario.load
        arrivals = worker_arrivals(state, state.worker_index, self.payloads)
        first = next(arrivals, None)  # opens a capture and fills its reorder window before the clock starts
        start = time.perf_counter()
        recorder = state.recorder = new_recorder(state, start)
        connections = BoundedSemaphore(load.pool)
        in_flight = Group()
        for offset, payload in itertools.chain([first] if first else [], arrivals):
            intended = start + offset
            sleep_until(intended)
            if state.stopping:  # stopped early: what is in flight finishes, nothing more is sent
                break
            for _ in range(2 if payload.twin else 1):  # a messy duplicate: the same request twice at once
                recorder.scheduled(payload.cls, intended)
                if len(in_flight) >= load.max_in_flight:
                    recorder.dropped(payload.cls, intended)
                    continue
                in_flight.spawn(self._send, recorder, payload, intended, connections)
        in_flight.join(timeout=3 * load.timeout + 2)  # connection wait + request guard, then give up
        state.done = True  # the shape stops the test once every worker is done
        if state.local and not state.stopping:  # a test stopped early is ending already
            gevent.spawn(_end_now, state)

    def closed_request(self) -> None:
        state = self.state
        if state.recorder is None:
            state.recorder = new_recorder(state, state.started)
        index = state.worker_index + state.workers * state.closed_sent
        state.closed_sent += 1
        payload = pick(state, self.payloads, index)
        if payload.twin:  # a messy duplicate: this user sends it twice at once
            Group().map(lambda _: self._closed_send(payload), range(2))
        else:
            self._closed_send(payload)

    def _closed_send(self, payload: Payload) -> None:
        # The closed-load path of _send: no connection cap, no guard, the send time is the intended time.
        recorder = self.state.recorder
        actual = time.perf_counter()
        recorder.sent_closed(payload.cls, actual)
        answer = self.transport.send(payload)  # closed load is never a replay: the protocol's method and path
        done = time.perf_counter()
        kind, timing, named = self.transport.outcome(payload, answer)
        if payload.expect is not None:
            kind = judge_answer(recorder, payload, actual, kind, named)
        elif (stream := self.transport.stream(answer, done)) is not None:
            recorder.streamed(payload.cls, actual, done, stream, kind == OK, *_token_counts(payload))
        recorder.completed(payload.cls, actual, actual, done, kind, timing)


def _token_counts(payload: Payload) -> tuple[int, int | None]:
    """(output tokens asked for, prompt tokens by the scenario's tokenizer) of a generative request."""
    return payload.max_tokens, payload.prompt_tokens


def new_recorder(state: RunState, start: float) -> Recorder:
    """This process's recorder, with the scenario's warm-up and goodput bounds."""
    scenario = state.scenario
    return Recorder(start, scenario.load.warmup, scenario.generation.slos_ms(), token_counter(scenario))


def worker_arrivals(state: RunState, worker_index: int, payloads):
    """(intended offset, payload) of one worker's share of the schedule: synthetic, or a capture's."""
    load = state.scenario.load
    if state.config.replay:
        spec, requests = build_replay(state.config, payloads)
        for arrival in schedule(spec):
            if isinstance(arrival, Arrival) and arrival.index % state.workers == worker_index:
                yield arrival.offset, requests.payload(arrival)
        return
    times = arrival_times(load.shape, load.warmup + load.duration, load.arrivals, state.scenario.seed)
    for index, offset in partition(times, worker_index, state.workers):
        yield offset, pick(state, payloads, index)


def pick(state: RunState, payloads, index: int) -> Payload:
    """Arrival ``index``'s payload: a messy one for the scenario's messy share, else a clean one."""
    messy = state.messy()
    if messy is not None and (request := messy.pick(index)) is not None:
        return messy_payload(request)
    return payloads.pick(index)


def measured_share(state: RunState, worker_index: int) -> Counter[str]:
    """A worker's measured arrivals by class (a messy twin counts twice, as it is scheduled twice)."""
    share: Counter[str] = Counter()
    _, payloads = state.payloads()
    for offset, payload in worker_arrivals(state, worker_index, payloads):
        if offset >= state.scenario.load.warmup:
            share[payload.cls] += 2 if payload.twin else 1
    return share


class ScenarioShape(LoadTestShape):
    """Users over time: one scheduler per worker for open load, the shape's count for closed load."""

    def tick(self):
        state = run_state(self.runner.environment)
        load, t = state.scenario.load, self.get_run_time()
        hard_stop = state.scenario.total_seconds + load.timeout + 10
        if load.model == "open":
            if _all_done(state):
                state.complete = True
                return None
            if t > hard_stop:
                return None
            return state.workers, state.workers
        if t >= state.scenario.total_seconds:
            state.complete = True
            return None
        users = round(load.shape.at(t))
        return users, max(1, users) * 10


def _all_done(state: RunState) -> bool:
    """Every worker has sent its share, or was lost (no use waiting for it)."""
    if state.local:
        return state.done
    return state.collector is not None and len(state.collector.done | set(state.lost)) >= state.workers


def _notice_lost(state: RunState) -> None:
    """Master: a worker Locust's heartbeat marks missing, or that left, before it was done, is lost."""
    runner = state.environment.runner
    if not isinstance(runner, MasterRunner) or state.complete or runner.state not in (STATE_SPAWNING, STATE_RUNNING):
        return
    collector = state.collector
    present = {client.id: client.state for client in runner.clients.all}
    for client_id in runner.worker_indexes:
        if client_id in collector.done or client_id in state.lost:
            continue
        if present.get(client_id, STATE_MISSING) == STATE_MISSING:
            state.lost[client_id] = collector.last_report.get(client_id, 0.0)
            if state.scenario.load.model == "open" and _all_done(state):
                gevent.spawn(_end_now, state)


def _notice_silent(state: RunState) -> None:
    """Master, at the end: a worker whose reports stopped ``SILENT_S`` before the others' is lost too.

    Locust's heartbeat takes a few seconds to mark a worker missing; closed load ends on the clock,
    not when every worker is done, so a worker lost in its last seconds is caught here.
    """
    reports = state.collector.last_report
    if not isinstance(state.environment.runner, MasterRunner) or not reports:
        return
    newest = max(reports.values())
    for client_id in state.environment.runner.worker_indexes:
        if client_id in state.collector.done or client_id in state.lost:
            continue
        if newest - reports.get(client_id, 0.0) > SILENT_S:
            state.lost[client_id] = reports.get(client_id, 0.0)


def _lost_workers(state: RunState) -> list[dict]:
    """At the end: each lost worker that never finished, with its unsent arrivals now in the accounting."""
    _notice_silent(state)
    runner = state.environment.runner
    lost = []
    for client_id, at in state.lost.items():
        if client_id in state.collector.done:  # it came back and finished its share after all
            continue
        index = runner.worker_indexes.get(client_id, 0)
        if state.scenario.load.model == "open":
            share = measured_share(state, index)
        else:  # closed load has no schedule: what it lost is what it sent and never reported back
            share = state.collector.reported(client_id, "scheduled")
        arrivals = state.collector.lose(client_id, share)
        lost.append({"worker": index + 1, "of": state.workers, "at_s": float(int(at)), "arrivals": arrivals})
    return sorted(lost, key=lambda w: w["worker"])


def _end_now(state: RunState) -> None:
    """End an open-load run as soon as every worker is done, as the shape would at its next tick.

    Locust asks the shape once a second, so a run would otherwise go on idling for up to a second
    after its last answer (more with workers, whose reports come once a second). This does what
    Locust's shape worker does when ``tick`` returns None: ``runner.quit()`` in a headless run,
    ``runner.stop()`` under the web UI, which waits for the next test.
    """
    runner = state.environment.runner
    if runner is None or not _all_done(state) or state.complete or state.stopping:
        return
    state.complete = True
    if state.web:
        runner.stop()
    else:
        runner.quit()


# -- events ---------------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    parser.add_argument(
        "--loadtest-run",
        type=str,
        default="",
        include_in_web_ui=False,
        help="run configuration (JSON) written by `loadtest run`",
    )


@events.test_start.add_listener
def _on_test_start(environment, **_) -> None:
    gc.collect()
    gc.freeze()  # fewer, shorter collector pauses on the send path
    state = run_state(environment)
    state.started, state.started_epoch = time.perf_counter(), time.time()
    if state.collector is not None and state.progress is None:
        state.progress = gevent.spawn(_progress_loop, state)


@events.test_stopping.add_listener
def _on_test_stopping(environment, **_) -> None:
    """Stop scheduling at once. Without this, Locust lets the scheduler's one long task run on for
    ``--stop-timeout`` (the scenario's timeout): a SIGTERM took 11.7 s and kept sending meanwhile."""
    run_state(environment).stopping = True


@events.report_to_master.add_listener
def _on_report_to_master(client_id, data, **_) -> None:
    state = _STATE
    if state is not None and state.recorder is not None:
        delta = state.recorder.take_delta(time.perf_counter(), pause=_yield)
        delta["done"] = state.done
        data["loadtest"] = delta


@events.worker_report.add_listener
def _on_worker_report(client_id, data, **_) -> None:
    state = _STATE
    if state is not None and state.collector is not None and "loadtest" in data:
        at = time.perf_counter() - state.started
        state.collector.absorb(data["loadtest"], client_id, at=at)  # the master sends nothing: no need to yield
        if state.scenario.load.model == "open" and _all_done(state):
            gevent.spawn(_end_now, state)


def _pull_local(state: RunState, final: bool = False) -> None:
    if not (state.local and state.collector is not None and state.recorder is not None):
        return
    pause = (lambda: None) if final else _yield
    with state.pull_lock:  # the final pull at quitting waits for one in progress
        delta = state.recorder.take_delta(time.perf_counter(), final=final, pause=pause)
        delta["done"] = state.done
        state.collector.absorb(delta, pause=pause)


def _progress_loop(state: RunState) -> None:
    while True:
        gevent.sleep(1.0)
        _pull_local(state)
        _notice_lost(state)
        _write_progress(state)


def _write_progress(state: RunState) -> None:
    if not state.config.progress_file:
        return
    collector = state.collector
    elapsed = time.perf_counter() - state.started
    accounting = collector.accounting()
    last = max((s for s in collector.timeline if s < int(elapsed)), default=None)
    recent = collector.timeline.get(last, {}) if last is not None else {}
    response = quick_percentiles(collector.histogram("response", ALL))
    progress = {
        "elapsed": round(elapsed, 2),
        "total": state.scenario.total_seconds,
        "target": round(state.target_at(elapsed), 2),
        "sent_last_second": recent.get("sent", 0),
        "ok": accounting.ok,
        "errors": accounting.errors,
        "timeouts": accounting.timeouts,
        "dropped": accounting.dropped,
        "in_flight": sum(collector.in_flight.values()),
        "p50_ms": response.get("p50"),
        "p99_ms": response.get("p99"),
        "warming_up": elapsed < state.scenario.load.warmup,
    }
    write_atomic(state.config.progress_file, json.dumps(progress))


@events.quitting.add_listener
def _on_quitting(environment, **_) -> None:
    state = _STATE
    if state is None or state.collector is None or state.web:  # the web UI's tests are written as each stops
        return
    write_measurements(state, state.config.out_dir)


def write_measurements(state: RunState, out: Path) -> None:
    """The last of this process's recording pulled, everything measured since the test started written into ``out``."""
    _pull_local(state, final=True)
    lost_workers = _lost_workers(state) if state.workers > 1 else []
    stats = state.environment.stats.total
    meta = state.config.meta_for_summary(
        started_epoch=state.started_epoch,
        elapsed=time.perf_counter() - state.started,
        interrupted=not state.complete,
        processes=state.workers,
        locust_requests=stats.num_requests,
        locust_failures=stats.num_failures,
        lost_workers=lost_workers,
    )
    write_results(out, state.collector, meta, state.target_at, state.started_epoch)
