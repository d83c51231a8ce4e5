"""The one small shared bucket: config loading, logging, atomic I/O, seeding, cache location."""

from lmstack.common.atomic import atomic_dir, atomic_write_bytes, atomic_write_text
from lmstack.common.config import ConfigError, config_to_dict, load_config
from lmstack.common.home import lmstack_home
from lmstack.common.log import JsonlLogger, info, progress, read_jsonl
from lmstack.common.seed import pick_device, seed_everything

__all__ = [
    "ConfigError",
    "JsonlLogger",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "config_to_dict",
    "info",
    "lmstack_home",
    "load_config",
    "pick_device",
    "progress",
    "read_jsonl",
    "seed_everything",
]
