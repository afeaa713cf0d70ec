"""fn-core's built-in plugins. Each uses only the public hooks, as a third-party plugin would.

They are registered first by `fn_core.plugins.get_plugin_manager` (so third-party impls run
before them) and are listed in the same ``fn_core.plugins`` entry-point group in setup.cfg.
Any of them can be turned off with ``FN_DISABLE_PLUGINS`` by the name on the left.
"""

BUILTIN_PLUGINS: list[tuple[str, str]] = [
    ("placer-ch", "fn_plugins_builtin.placer_ch"),
    ("placer-naive", "fn_plugins_builtin.placer_naive"),
    ("driver-docker", "fn_plugins_builtin.driver_docker"),
    ("pool-static", "fn_plugins_builtin.pool_static"),
    ("status-docker", "fn_plugins_builtin.status_docker"),
    ("call-log", "fn_plugins_builtin.call_log"),
    ("tracing", "fn_plugins_builtin.tracing"),
    ("fn-metrics", "fn_plugins_builtin.fn_metrics"),
]
