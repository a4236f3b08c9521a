"""The hooks a chexops plugin implements.

Each hook receives a `register` callable and calls it once per component it provides. A plugin may implement
any subset. Built-in components use these very hooks (chexops/builtin/).
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "chexops"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_families(register: Any) -> None:
    """Call `register(FamilySpec(...))` for each architecture family."""


@hookspec
def register_initializers(register: Any) -> None:
    """Call `register(InitializerSpec(...))` for each way of filling a network with weights."""


@hookspec
def register_truncations(register: Any) -> None:
    """Call `register(TruncationSpec(...))` for each way of cutting a network."""


@hookspec
def register_label_policies(register: Any) -> None:
    """Call `register(LabelPolicySpec(...))` for each uncertain-label policy."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands to the `chexops` group, e.g. `cli.add_command(my_command)`."""
