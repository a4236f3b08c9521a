"""Built-in commands, added to the CLI through the same `register_commands` hook a plugin uses."""

from __future__ import annotations

import importlib
from typing import Any

from chexops.components.hookspecs import hookimpl

# (module, attribute) of each built-in command; imported only when the CLI starts.
COMMANDS = (
    ("chexops.cli.components", "plugins_command"),
    ("chexops.cli.components", "components_command"),
    ("chexops.cli.components", "build_command"),
    ("chexops.cli.components", "weights_group"),
    ("chexops.cli.scaffold", "plugin_group"),
    ("chexops.cli.data", "synth_command"),
    ("chexops.cli.data", "data_group"),
    ("chexops.cli.train", "train_command"),
    ("chexops.cli.plan", "plan_command"),
    ("chexops.cli.worker", "worker_command"),
    ("chexops.cli.submit", "submit_group"), ("chexops.cli.grid", "grid_group"),
    ("chexops.cli.registry", "registry_group"), ("chexops.cli.registry", "promote_command"),
    ("chexops.cli.predict", "predict_command"),
    ("chexops.cli.ui", "ui_command"),
)


@hookimpl
def register_commands(cli: Any) -> None:
    for module, attribute in COMMANDS:
        cli.add_command(getattr(importlib.import_module(module), attribute))
