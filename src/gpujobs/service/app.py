"""The app factory.  Start-up order matters: store and its live index → executor → reconciler (its first
pass finds what happened to the jobs while the service was away) → scheduler."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..config import Settings
from ..datadir import protect_data_dir
from ..errors import GpujobsError
from ..executors.base import Executor
from ..localaccess import ACCESS_FILE
from ..models import JobSpec
from ..reconciler import Reconciler
from ..scheduler.loop import SchedulerLoop
from ..store import Store
from ..store.live import LiveJobs
from .audit import AuditLog
from .audit_routes import router as audit_router
from .auth import Authenticator, HubAuthenticator, LocalAuthenticator
from .dashboard import router as dashboard_router
from .health import DataDirLock, LoopLag, Maintenance
from .jobs import JobService
from .localmode import how_to_use, prepare_local_access
from .metrics import Metrics, RequestTimer
from .responses import BodyLimit, on_domain_error, on_http_error, on_unexpected, on_validation_error
from .routes import router
from .runtime import Runtime
from .web import add_web

log = logging.getLogger(__name__)

ExecutorFactory = Callable[[Settings], Executor]


def default_executor(settings: Settings) -> Executor:
    if settings.executor == "kubernetes":
        from ..executors.kubernetes.executor import KubernetesExecutor

        return KubernetesExecutor(settings)
    from ..executors.local import LocalExecutor

    return LocalExecutor(settings)


def create_app(
    settings: Settings, *, executor_factory: ExecutorFactory = default_executor, run_loops: bool = True
) -> FastAPI:
    """The service.  ``run_loops=False`` leaves the scheduler and the reconciler idle, for tests that
    drive them a step at a time (``scheduler.cycle()``, ``reconciler.pass_once()``)."""
    prefix = settings.service_prefix.rstrip("/")
    metrics = Metrics()  # made here: the request timer below observes into it

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        protect_data_dir(settings.data_dir)
        lock = DataDirLock(settings.data_dir)
        lock.acquire()
        store = Store(settings.database)
        hub_client = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
        auth: Authenticator = HubAuthenticator(settings, hub_client)
        if settings.single_machine:  # after the data dir's lock: a second service changes nothing
            access, access_file = prepare_local_access(settings), settings.data_dir / ACCESS_FILE
            auth = LocalAuthenticator(access, access_file, settings)
            print(how_to_use(access, str(access_file)), flush=True)
        live = LiveJobs()
        await live.attach(store)
        executor = executor_factory(settings)
        scheduler = SchedulerLoop(store, live, executor, settings)
        reconciler = Reconciler(store, live, executor, settings, scheduler.usage, on_release=scheduler.wake)
        scheduler.on_admit = reconciler.wake
        executor.wake = reconciler.wake
        jobs = JobService(settings, store, executor, scheduler, on_cancel=reconciler.wake)
        store.subscribe(jobs.on_commit)
        store.subscribe(metrics.on_commit)
        lag = LoopLag()
        maintenance = Maintenance(store)
        audit_log = AuditLog(
            settings.data_dir / "audit.log",
            max_bytes=settings.audit_log_max_bytes,
            keep=settings.audit_log_keep,
        )
        app.state.runtime = Runtime(
            settings=settings,
            store=store,
            executor=executor,
            live=live,
            scheduler=scheduler,
            reconciler=reconciler,
            jobs=jobs,
            auth=auth,
            metrics=metrics,
            version=__version__,
            lag=lag,
            audit=audit_log,
        )
        await executor.start()
        if run_loops:
            await reconciler.start()
            await scheduler.start()
        lag.start()
        maintenance.start()
        audit_log.record(
            "start",
            user=None,
            outcome="ok",
            version=__version__,
            executor=executor.name,
            # Which configuration this start runs with: a changed digest is a changed configuration.
            config_sha256=hashlib.sha256(
                settings.model_dump_json(exclude={"hub_api_token"}).encode()
            ).hexdigest(),
        )
        log.info(
            "gpujobs %s ready: executor %s, GPUs from %s",
            __version__,
            executor.name,
            executor.inventory().source,
        )
        try:
            yield
        finally:
            await maintenance.stop()
            await lag.stop()
            await scheduler.stop()
            await reconciler.stop()
            await executor.close()
            await hub_client.aclose()
            store.close()
            audit_log.close()
            lock.release()

    app = FastAPI(
        title="gpujobs",
        version=__version__,
        description="Run Python scripts as GPU jobs from JupyterHub.  Every JSON answer is "
        '`{"success", "data", "message", "timestamp"}`.',
        lifespan=lifespan,
        openapi_url=f"{prefix}/openapi.json",
        docs_url=None,  # served from local files instead (web.py, routes.api_docs)
        redoc_url=None,
    )
    app.add_exception_handler(GpujobsError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_middleware(BodyLimit, limit=2 * settings.max_inline_script_bytes + 64 * 1024)
    app.include_router(router, prefix=prefix)
    app.include_router(audit_router, prefix=prefix)
    app.include_router(dashboard_router, prefix=prefix)
    add_web(app, settings, prefix)
    app.add_middleware(RequestTimer, histogram=metrics.request_seconds)  # outermost: times everything
    _publish_spec_schema(app)
    return app


def _publish_spec_schema(app: FastAPI) -> None:
    """Put ``JobSpec`` into the OpenAPI components: the submit route parses it itself (see routes)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            spec = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(spec.pop("$defs", {}))
            components["JobSpec"] = spec
        return app.openapi_schema or schema

    app.openapi = openapi  # type: ignore[method-assign]
