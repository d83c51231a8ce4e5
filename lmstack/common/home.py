"""Where lmstack keeps fetched sources, converted models and caches: `$LMSTACK_HOME` (default ~/.cache/lmstack)."""

from __future__ import annotations

import os
from pathlib import Path


def lmstack_home() -> Path:
    home = Path(os.environ.get("LMSTACK_HOME", Path.home() / ".cache" / "lmstack")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home
