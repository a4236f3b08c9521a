"""DVC stage plugins: record the installed plugins (distribution, version, code hash) in plugins.lock.json and each
component's fingerprint in plugins.lock/<kind>/<name>.json, the files the other stages depend on."""

from pathlib import Path

import yaml

from chexops.components.lock import write_lock
from chexops.naming import PARAMS_FILE, PLUGINS_LOCK

if __name__ == "__main__":
    grid = (yaml.safe_load(Path(PARAMS_FILE).read_text()) or {}).get("grid") or {}
    changed = write_lock(grid=grid)
    print(f"{PLUGINS_LOCK}, plugins.lock/: {'changed: ' + ', '.join(changed) if changed else 'unchanged'}")
