"""A worker's budget of document bytes held for transfers in flight: the HTTP endpoint's bound on
memory, whatever the number of concurrent exports or how slowly their clients read.

A served document is encoded whole (its sha256 goes in the audit line before the first byte) and
its bytes are held until the last of them has been handed to the server or the transfer has
broken off. Each transfer reserves its size here first; one that would take the bytes held above
the capacity is refused (the endpoint answers 503 with Retry-After) rather than queued, so a
slow reader can delay nobody and memory never grows with the queue. A document larger than the
whole capacity is still served when it is the only one in flight: a budget must never make a
learner's export impossible, only wait for its turn.
"""

from __future__ import annotations

import threading


class ByteBudget:
    """Bytes reserved against `capacity`. Thread-safe (the event loop and worker threads share it).

    Invariant: `held <= capacity`, except while a single reservation larger than `capacity` is
    the only one held.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("a byte budget needs a positive capacity")
        self.capacity = capacity
        self._held = 0
        self._count = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Bytes reserved now."""
        return self._held

    def reserve(self, size: int) -> bool:
        """Reserve `size` bytes; False (nothing reserved) when they do not fit. Every True must
        be matched by exactly one `release(size)`."""
        if size < 0:
            raise ValueError("a reservation cannot be negative")
        with self._lock:
            if self._count and self._held + size > self.capacity:
                return False
            self._held += size
            self._count += 1
            return True

    def release(self, size: int) -> None:
        """Give back a reservation of `size` bytes made by `reserve`."""
        with self._lock:
            if self._count == 0 or size > self._held:
                raise RuntimeError("released more than was reserved")
            self._held -= size
            self._count -= 1
