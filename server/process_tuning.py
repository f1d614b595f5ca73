"""Process-wide settings of the server: the cyclic garbage collector kept off the
streaming path, and the interval at which threads hand the GIL over.

Garbage collector. Nearly everything the server allocates per call or per stream
message (futures, handles, small lists) is freed by reference counting; the cyclic
collector only has to find the rare cycle. With CPython's default thresholds (700, 10,
10) it still runs constantly on a busy server, because a burst of messages in flight
briefly holds more than 700 container objects: measured with bench/tailers_delay.py
(1,000 tailers at 1,000 lines/s), about 60 young collections a second, and a full
collection every two seconds that stopped the event loop (every stream) for about 80 ms
each time. ``tune_process`` moves what exists after start-up (modules, protobuf
descriptors, loaded executables) to the permanent generation, so no collection ever
walks it again, and lets the young generation grow to 20,000 objects before a
collection: at most a few MB of extra garbage waits, and collections become rare and
short.

Switch interval. The log sink stores lines on a writer thread (server/domain/
logsink.py). SQLite releases the GIL while it works, but the writer needs it back
between statements, and a busy event loop thread gives it up only every switch
interval (5 ms by default) unless it waits on I/O. At 1 ms the writer keeps up with a
step that prints as fast as it can (bench/tail_throughput.py, live: about 10 % more
lines/s); a thread that wants the GIL delays the loop by at most 1 ms.
"""

from __future__ import annotations

import gc
import sys

YOUNG_THRESHOLD = 20_000
SWITCH_INTERVAL = 0.001


def tune_process() -> None:
    """Call once, after start-up, in the server process (not per test server)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    sys.setswitchinterval(SWITCH_INTERVAL)
