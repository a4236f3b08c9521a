"""What plugins register: hookspecs, the plugin manager, the component registry, the spec classes, the built-in
plugins, and the lock file that records the installed ones."""


def reset() -> None:
    """Forget the loaded plugins and the registry built from them (tests, or after installing a plugin)."""
    from chexops.components.manager import plugin_manager
    from chexops.components.registry import get_registry

    plugin_manager.cache_clear()
    get_registry.cache_clear()
