"""DVC stage plugins: record the installed plugins (distribution, version, code hash) in plugins.lock.json."""

from chexops.components.lock import write_lock
from chexops.naming import PLUGINS_LOCK

print(f"{PLUGINS_LOCK}: {'updated' if write_lock() else 'unchanged'}")
