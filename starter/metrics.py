"""A worker's Prometheus endpoint: storyloom's scenes, images and step durations plus the SDK's.

One scrape target per worker: ``GET http://<worker>:<metrics_port>/metrics`` returns storyloom's
metrics followed by the Temporal SDK's (``temporal_*``). The SDK serves its own registry from
Rust on ``127.0.0.1:<metrics_port + 1>`` and cannot share ours, so this endpoint appends that
page to ours; ``metrics_port + 1`` can also be scraped directly. ``metrics_port = 0``: off.

Nothing in activity or workflow code changes: ``MetricsInterceptor`` (given to the client, so
every worker of the process uses it) times every activity and counts scene outcomes.

    storyloom_step_duration_seconds{step, outcome}   histogram, every activity attempt
    storyloom_images_total{outcome}                  done / failed, as attach_image records it
    storyloom_scenes_total{outcome, ...}             completed / failed / cancelled SceneWorkflows
                                                     (SDK meter: replay-safe; on the SDK page)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from temporalio import activity, client, workflow
from temporalio.exceptions import FailureError, is_cancelled_exception
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from starter.settings import Settings

__all__ = ["REGISTRY", "MetricsEndpoint", "MetricsInterceptor", "serve_metrics"]

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
STEP_SECONDS = Histogram(
    "storyloom_step_duration_seconds", "Duration of one activity attempt, by step and outcome",
    ["step", "outcome"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
IMAGES = Counter("storyloom_images", "Scene pictures recorded on their node, by outcome",
                 ["outcome"], registry=REGISTRY)
SCENES = "storyloom_scenes_total"
SCENE_WORKFLOW = "SceneWorkflow"
IMAGE_STEP = "attach_image"


def _count_image(args: Any) -> None:
    status = getattr(args[0], "status", None) if args else None
    value = getattr(status, "value", status)
    if value in ("done", "failed"):
        IMAGES.labels(outcome=value).inc()


class _TimedActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        step = activity.info().activity_type
        started = time.monotonic()
        outcome = "error"
        try:
            result = await super().execute_activity(input)
            outcome = "ok"
            if step == IMAGE_STEP:
                _count_image(input.args)
            return result
        except BaseException as err:
            outcome = "cancelled" if is_cancelled_exception(err) else "error"
            raise
        finally:
            STEP_SECONDS.labels(step=step, outcome=outcome).observe(time.monotonic() - started)


class _SceneOutcomes(WorkflowInboundInterceptor):
    """Counts how SceneWorkflows end, through the SDK's replay-safe workflow meter."""

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        try:
            result = await super().execute_workflow(input)
        except BaseException as err:
            # Only endings: a non-Temporal exception fails the task (retried), not the workflow.
            if is_cancelled_exception(err):
                self._count("cancelled")
            elif isinstance(err, FailureError):
                self._count("failed")
            raise
        self._count("completed")
        return result

    @staticmethod
    def _count(outcome: str) -> None:
        if workflow.info().workflow_type == SCENE_WORKFLOW:
            workflow.metric_meter().create_counter(
                SCENES, "SceneWorkflows ended, by outcome").add(1, {"outcome": outcome})


class MetricsInterceptor(client.Interceptor, Interceptor):
    """Times every activity and counts scene/image outcomes. Give it to ``Client.connect``;
    workers built on that client use it too. Never changes a result or an exception."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _TimedActivity(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _SceneOutcomes


class MetricsEndpoint:
    """The running endpoint; ``client_options`` go to ``Client.connect``. Close it at the end."""

    def __init__(self, port: int, sdk_address: str, runtime: Runtime,
                 runner: web.AppRunner) -> None:
        self.port = port
        self.sdk_address = sdk_address
        self.runtime = runtime
        self._runner = runner

    def client_options(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "interceptors": [MetricsInterceptor()]}

    async def close(self) -> None:
        await self._runner.cleanup()


async def _sdk_page(address: str) -> bytes:
    try:
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as http, \
                http.get(f"http://{address}/metrics") as reply:
            return await reply.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        return f"# Temporal SDK metrics unavailable at {address}: {exc!r}\n".encode()


async def serve_metrics(settings: Settings, host: str = "0.0.0.0") -> MetricsEndpoint | None:
    """Start the SDK's Prometheus exporter and our endpoint; None when ``metrics_port`` is 0.

    Raises OSError when a port is taken (the message names it).
    """
    if not settings.metrics_port:
        return None
    sdk_address = f"127.0.0.1:{settings.metrics_port + 1}"
    runtime = Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(bind_address=sdk_address, durations_as_seconds=True)))

    async def scrape(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY) + await _sdk_page(sdk_address)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, settings.metrics_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"metrics port {settings.metrics_port} is taken ({exc}); set "
                      "STORYLOOM_METRICS_PORT to a free port, or 0 for no metrics") from exc
    logger.info("metrics on http://%s:%s/metrics (Temporal SDK also on %s)", host,
                settings.metrics_port, sdk_address)
    return MetricsEndpoint(settings.metrics_port, sdk_address, runtime, runner)
