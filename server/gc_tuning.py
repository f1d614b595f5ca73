"""The cyclic garbage collector of the server process, kept off the streaming path.

Nearly everything the server allocates per call or per stream message (futures,
handles, small lists) is freed by reference counting; the cyclic collector only has
to find the rare cycle. With CPython's default thresholds (700, 10, 10) it still runs
constantly on a busy server, because a burst of messages in flight briefly holds more
than 700 container objects: measured with bench/tailers_delay.py (1,000 tailers at
1,000 lines/s), about 60 young collections a second, and a full collection every two
seconds that stopped the event loop (every stream) for about 80 ms each time.

``tune_gc`` moves what exists after start-up (modules, protobuf descriptors, loaded
executables) to the permanent generation, so no collection ever walks it again, and
lets the young generation grow to 20,000 objects before a collection: at most a few
MB of extra garbage waits, and collections become rare and short.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Call once, after start-up, in the server process (not per test server)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
