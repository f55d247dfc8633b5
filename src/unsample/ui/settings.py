"""The UI's limits and concurrency, in one place (docs/ui.md states them)."""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
"""Where ``unsample ui`` listens unless told otherwise: this machine only."""
DEFAULT_PORT = 7860

MAX_IMAGE_PIXELS = 4096 * 4096
"""Largest upload (width x height) the page takes; a bigger image is refused before its pixels
are decoded. The model works on about its native pixel count anyway (`EditSpec.fit`; 64 x 64 for the
embedded model), and the edit is written back at the photo's own size."""
MAX_UPLOAD_SIZE = "25mb"
"""Largest upload gradio accepts at all (bytes on the wire; its own message beyond it)."""
MAX_STEPS = 1000
"""Most inversion steps the page runs (the DDPM schedules have 1000 training timesteps)."""

MODEL_CONCURRENCY = 1
"""Model jobs (invert, edit) run one at a time: they share one model, whose attention processors a
prompt-to-prompt edit swaps while it runs, and the CPU threads. Other users' jobs wait in the
queue, which shows them their place; the page itself (uploads, scenes, controls) stays responsive."""
PAGE_CONCURRENCY = 8
"""Light page events (reading an upload, rendering a scene, switching the method) run this many at a
time, in their own queue, so they never wait behind a model job."""
QUEUE_MAX_SIZE = 32
"""Jobs that may wait in the queue; beyond it gradio tells the user the queue is full."""
CACHED_INVERSIONS = 4
"""Inversions kept per session (most recent first); an edit of a cached one does not invert again."""
CACHE_CLEANUP: tuple[int, int] = (3600, 86400)
"""gradio's ``delete_cache`` (frequency, age in seconds): every hour it deletes the files it cached for
the page (uploads, the images it showed) older than a day, and all of them when the server stops."""
DISPLAY_MIN_SIDE = 256
"""The photo's preview, the reconstruction and the mask overlay are shown enlarged (nearest neighbour)
to at least this many pixels a side; the before / after and the downloads are at the photo's own size."""
