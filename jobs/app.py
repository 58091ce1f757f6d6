"""The Celery app: broker, queues and delivery guarantees, all from settings.

Clients use it only to send tasks by name; `worker/` registers the task bodies on it.
"""

from __future__ import annotations

from celery import Celery
from kombu import Connection, Exchange, Queue
from kombu.exceptions import KombuError

from aiscan.jobs import logsafe
from aiscan.jobs.errors import ConfigError, Unavailable
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources.urltext import redact_url
from aiscan.jobs.tasks import PLAN_QUEUE, QUEUES, RECOVER_STALLED, ROUTES, TICK_SCHEDULES, task_time_limit

# Seconds a new pool process may take to start (import the model stack, warm up) before it is replaced.
WORKER_PROC_ALIVE_S = 180

BROKER_EXAMPLE = "e.g. redis://host:6379/0 or amqp://user@host//"


class BrokerError(Unavailable):
    """The broker cannot take a task: unreachable, or refusing the connection."""


def check_broker_url(url: str) -> None:
    """Refuse a broker URL kombu cannot use, before anything is written: a typo is one line, not a job."""
    where = redact_url(url)
    if "://" not in url:
        raise ConfigError(f"AISCAN_BROKER_URL={where!r} is not a URL: {BROKER_EXAMPLE}")
    try:
        Connection(url).transport  # noqa: B018 - resolving the transport is the check; nothing connects
    except KeyError:
        scheme = url.split("://", 1)[0]
        raise ConfigError(f"AISCAN_BROKER_URL: unknown broker scheme {scheme!r}: {BROKER_EXAMPLE}") from None
    except ImportError as exc:
        raise ConfigError(
            f"AISCAN_BROKER_URL={where!r} needs a library that is not installed: {exc}"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"AISCAN_BROKER_URL is not a valid URL ({exc}): {BROKER_EXAMPLE}") from None


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings.broker_url`` with at-least-once delivery and JSON only."""
    if not settings.broker_url:
        raise ConfigError("AISCAN_BROKER_URL is not set: Celery needs a broker (redis:// or amqp://)")
    check_broker_url(settings.broker_url)
    # Workers log at INFO: no URL query string or credentials may reach their logs.
    logsafe.install()
    app = Celery("aiscan", broker=settings.broker_url, backend=settings.result_backend)
    app.conf.update(
        # A task is acknowledged only after it ran, and a worker killed mid-task gives it back:
        # with idempotent chunks this is at-least-once without duplicate rows.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A pool process loads TensorFlow and warms up the model before it reports up: Celery's default
        # of 4 s kills every replacement of a dead pool process on a busy machine (seen in `make faults`).
        worker_proc_alive_timeout=WORKER_PROC_ALIVE_S,
        broker_transport_options=_transport_options(settings),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_routes=ROUTES,
        task_default_queue=PLAN_QUEUE,
        task_soft_time_limit=settings.task_soft_time_limit,
        task_time_limit=task_time_limit(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
        beat_schedule={
            "aiscan-recover-stalled": {
                "task": RECOVER_STALLED,
                "schedule": recovery_interval(settings),
                # A tick nobody took in time is dropped: the next one does the same work.
                "options": {"queue": ROUTES[RECOVER_STALLED], "expires": recovery_interval(settings)},
            },
            # Beat only sends ticks; which schedule is due, and the claim that starts each due run once
            # however many beats and ticks race, live in the database.
            "aiscan-tick-schedules": {
                "task": TICK_SCHEDULES,
                "schedule": float(settings.schedule_tick),
                "options": {"queue": ROUTES[TICK_SCHEDULES], "expires": float(settings.schedule_tick)},
            },
        },
    )
    return app


def recovery_interval(settings: Settings) -> float:
    """Seconds between two recovery ticks of `aiscan beat`: often enough to notice a stall soon after
    AISCAN_STALL_TIMEOUT, never more than a minute apart."""
    return min(60.0, settings.stall_timeout / 4)


def _transport_options(settings: Settings) -> dict[str, int]:
    if not (settings.broker_url or "").startswith(("redis://", "rediss://", "redis+socket://")):
        return {}
    vt = settings.visibility_timeout
    return {
        # Redis gives an unacknowledged task back after this long: it must exceed the longest chunk.
        "visibility_timeout": vt,
        # kombu looks for such tasks only every 10 x 10 s by default; a dead worker's chunk should
        # come back soon after its visibility timeout, not minutes later.
        "unacked_restore_interval": max(1, min(10, vt // 5)),
        "unacked_restore_throttle": 1,
    }


class CeleryQueue:
    """Sends tasks by name to the broker; what `aiscan scan` uses when a broker is configured."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send(self, name: str, *args: object) -> None:
        """Send one task; BrokerError when the broker cannot be reached (after kombu's own retries)."""
        try:
            self.app.send_task(name, args=list(args), queue=ROUTES[name])
        except (KombuError, OSError) as exc:
            where = redact_url(self.app.conf.broker_url or "")
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise BrokerError(f"the broker {where} is unreachable ({reason})") from None
