"""The ``miso-mapper view`` command (registered in :mod:`miso_mapper.cli`): serve until Ctrl-C or SIGTERM."""

from __future__ import annotations

import sys
import time
import webbrowser
from pathlib import Path

from rich.console import Console

from miso_mapper.config import load_workflow
from miso_mapper.errors import MisoError
from miso_mapper.view.server import ViewerData, ViewerServer

console = Console()


def view_command(config: Path, port: int, open_browser: bool) -> None:
    """Serve the workflow's exported maps on 127.0.0.1:``port`` until a signal stops it (the CLI's
    ``interruptible`` turns Ctrl-C / SIGTERM into exit 130 / 143 after the server is closed)."""
    try:
        import rio_tiler  # noqa: F401 - the optional `view` extra
    except ImportError:
        raise MisoError("the viewer needs rio-tiler: pip install 'miso-mapper[view]'") from None
    workflow = load_workflow(config)
    data = ViewerData.of(workflow)
    with ViewerServer(data, port) as server:
        console.print(f"viewer: {server.url}  ({len(data.layers)} layers; Ctrl-C stops it)", highlight=False,
                      soft_wrap=True)
        sys.stdout.flush()  # a batch log or a test reads the URL through a pipe
        if open_browser:
            webbrowser.open(server.url)
        while True:
            time.sleep(3600)
