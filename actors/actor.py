"""The actor base: a mailbox, a lifecycle, and "let it crash".

An actor is an anyio task that takes messages from its mailbox (a NATS subscription,
optionally in a queue group) and handles each in its own task, at most ``concurrency``
at once; past that, messages wait in the mailbox (back-pressure, not loss).

Lifecycle: ``run`` subscribes, calls ``on_start``, signals readiness to its supervisor
(``task_status.started()``), then serves until cancelled. A crash is an exception
escaping ``handle``: it cancels the actor's other handlers and propagates out of ``run``,
where the supervisor decides (restart per its strategy). The state that matters lives in
the journal, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

import anyio
import structlog
from anyio.abc import TaskStatus
from warden.bus.connection import Bus, Envelope

log = structlog.get_logger("warden.actor")


class Actor(ABC):
    """Base of the actors that serve a subject. Subclasses implement ``handle``."""

    def __init__(
        self, bus: Bus, subject: str, *, queue: str | None = None, concurrency: int = 64
    ) -> None:
        self.bus = bus
        self.subject = subject
        self.queue = queue
        self.concurrency = concurrency
        self.handled = 0

    @property
    def name(self) -> str:
        return f"{type(self).__name__}({self.subject})"

    async def on_start(self) -> None:  # noqa: B027 - an optional hook
        """Called once the mailbox is subscribed, before readiness is signalled."""

    @abstractmethod
    async def handle(self, envelope: Envelope) -> None:
        """Handle one message. An exception escaping it crashes the actor."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the mailbox until cancelled. Blocks; raises what a handler raised.

        Each message is handled in a task of its own, made with ``create_task``: an anyio
        task group's ``start_soon`` cost about as much CPU as the handling of a worker's
        request. What the task group gave is kept: the first exception escaping a handler
        cancels the others, is waited out, and is raised from here.
        """
        limiter = anyio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        crashed: asyncio.Future[BaseException] = loop.create_future()
        handlers: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            handlers.discard(task)
            limiter.release()
            if task.cancelled():
                return
            error = task.exception()
            if error is None:
                self.handled += 1
            elif not crashed.done():
                crashed.set_result(error)

        async def deliver(envelope: Envelope) -> None:
            # In the subscription's delivery task: take a slot, then start the handler.
            # acquire_nowait first (acquire() yields to the loop twice even when a slot is
            # free); a full actor waits here, so later messages wait in the mailbox (the
            # client's pending queue) instead of piling up as tasks.
            try:
                limiter.acquire_nowait()
            except anyio.WouldBlock:
                await limiter.acquire()
            if crashed.done():  # crashing: the sender will retry elsewhere or later
                limiter.release()
                return
            task = loop.create_task(self.handle(envelope))
            handlers.add(task)
            task.add_done_callback(finished)

        try:
            async with self.bus.serve(self.subject, deliver, queue=self.queue):
                await self.on_start()
                task_status.started()
                log.debug("actor_started", actor=self.name)
                raise await crashed
        finally:
            for task in handlers:
                task.cancel()
            if handlers:
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(*handlers, return_exceptions=True)
