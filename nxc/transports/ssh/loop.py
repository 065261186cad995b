"""One asyncio event loop, in a daemon thread, for every ssh connection of the process.

Synchronous callers (the driver's ``Machine``, scenario scripts) hand it coroutines
with :meth:`EventLoopThread.call` and wait for the result in their own thread. Hundreds
of nodes cost one thread, not one per node.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# How long an interrupted caller waits for the cancelled coroutine to clean up (the ssh
# transport kills the remote command there) before the interruption propagates.
CLEANUP_TIMEOUT = 20.0


class EventLoopThread:
    """An event loop running forever in a daemon thread named ``name``."""

    def __init__(self, name: str = "nxc-ssh-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, coro: Coroutine[Any, Any, T], *, cleanup: float = CLEANUP_TIMEOUT) -> T:
        """Run ``coro`` on the loop; block this thread until it returns or raises.

        If this thread's wait is interrupted (``KeyboardInterrupt`` from Ctrl-C, or any
        exception raised into it), the coroutine is cancelled and this thread waits up
        to ``cleanup`` seconds for it to finish cleaning up before re-raising.
        """
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("EventLoopThread.call() from its own loop would deadlock")
        finished = threading.Event()

        async def guarded() -> T:
            try:
                return await coro
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(guarded(), self.loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                future.cancel()
                finished.wait(cleanup)
            raise


_shared: EventLoopThread | None = None
_shared_pid = 0
_shared_lock = threading.Lock()


def shared_loop() -> EventLoopThread:
    """The process's ssh event loop (a new one in a forked child)."""
    global _shared, _shared_pid
    with _shared_lock:
        if _shared is None or _shared_pid != os.getpid():
            _shared = EventLoopThread()
            _shared_pid = os.getpid()
        return _shared
