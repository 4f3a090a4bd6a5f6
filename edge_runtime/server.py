"""``edge-runtime serve``: settings, the app, uvicorn, and systemd notifications."""

from __future__ import annotations

import logging
import sys

import uvicorn

from edge_runtime.settings import SettingsError, load_settings


def serve(config: str | None, data_dir: str | None, host: str | None, port: int | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(config, data_dir=data_dir, host=host, port=port)
    except SettingsError as exc:
        print(f"edge-runtime: configuration error: {exc}", file=sys.stderr)
        return 2
    from edge_runtime.api.app import create_app
    from edge_runtime.memory import limit_malloc_arenas, map_large_blocks

    limit_malloc_arenas()  # before uvicorn's and ORT's threads: ~25 MB less RSS
    map_large_blocks()
    from edge_runtime.systemd import Notifier

    app = create_app(settings, notifier=Notifier.from_environment())
    logging.getLogger("edge_runtime").info(
        "data in %s (state.db, captures/, models/, replay/, logs/); the operator's page at "
        "http://%s:%d/", settings.data_path, settings.api.host, settings.api.port)
    # access lines come from RequestLogMiddleware (with milliseconds); open event streams
    # must not hold a shutdown up
    uvicorn.run(app, host=settings.api.host, port=settings.api.port, log_level="info",
                access_log=False, timeout_graceful_shutdown=3)
    return 0
