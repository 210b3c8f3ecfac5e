"""Task numbers by task id, for every log line that names a task (issue 17).

A task's number is the position of its first event (services/base.py gives it
when it saves the task; the tasks view keeps it). Log lines name tasks by id;
the logging set-up (adapters/logging.py) adds the number from here, so a new
log line cannot forget it. What is known is kept in a bounded map: numbers
this process handed out or read, and those its resolvers found (the oldest
remembered is forgotten first: a task's lines come in a burst). A resolver
(the composition root registers one per event store) is asked once per task
per process, never per log line; a task no resolver knows is asked again next
time (it may be one saved a moment ago by another process).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

Resolver = Callable[[str], "int | None"]
CACHE_SIZE = 10_000


class TaskNumbers:
    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._known: OrderedDict[str, int] = OrderedDict()
        self._resolvers: list[Resolver] = []
        self._lock = threading.Lock()

    def remember(self, task_id: str, number: int) -> None:
        with self._lock:
            self._known[task_id] = number
            self._known.move_to_end(task_id)
            if len(self._known) > self.size:
                self._known.popitem(last=False)

    def number(self, task_id: str) -> int | None:
        # A hit takes no lock (one dict read, atomic): it is on every log line naming a task.
        known = self._known.get(task_id)
        if known is not None:
            return known
        with self._lock:
            resolvers = list(self._resolvers)
        for resolver in resolvers:
            found = resolver(task_id)
            if found is not None:
                self.remember(task_id, found)
                return found
        return None

    def add_resolver(self, resolver: Resolver) -> Callable[[], None]:
        """Registers `resolver`; returns what unregisters it (a closed store must not be asked)."""
        with self._lock:
            self._resolvers.append(resolver)

        def remove() -> None:
            with self._lock:
                if resolver in self._resolvers:
                    self._resolvers.remove(resolver)
        return remove


# One per process, as the logging pipeline it serves is.
TASK_NUMBERS = TaskNumbers()
