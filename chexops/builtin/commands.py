"""Built-in commands, added to the CLI through the same `register_commands` hook a plugin uses."""

from __future__ import annotations

import importlib
from typing import Any

from chexops.hookspecs import hookimpl

# (module, attribute) of each built-in command; imported only when the CLI starts.
COMMANDS = (
    ("chexops.commands", "plugins_command"),
    ("chexops.commands", "components_command"),
    ("chexops.commands", "build_command"),
    ("chexops.commands", "weights_group"),
    ("chexops.data.synthetic", "synth_command"),
    ("chexops.data.commands", "data_group"),
    ("chexops.train.commands", "train_command"),
    ("chexops.worker", "worker_command"),
    ("chexops.modelreg.commands", "registry_group"), ("chexops.modelreg.commands", "promote_command"),
    ("chexops.predict", "predict_command"),
)


@hookimpl
def register_commands(cli: Any) -> None:
    for module, attribute in COMMANDS:
        cli.add_command(getattr(importlib.import_module(module), attribute))
