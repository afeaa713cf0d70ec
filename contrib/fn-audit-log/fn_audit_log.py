"""fn-core plugin: an audit log of what the v2 API changes, and apps kept from deletion.

Each app, fn or trigger created, updated or deleted through the v2 API (the node that stores them: `fn-core serve`,
`fn-core api`, an `fn-core lb` with its own store) is one JSON line appended to ``path`` (`object_changed`). An app
that carries ``keep_annotation`` cannot be deleted: 409, nothing deleted (`validate_delete`); its fns and triggers
can. Either setting may be left out. They live in objects that `configure` registers with each plugin manager, not
at module level: tests and `fn-core serve` build several managers in one process.
"""

from __future__ import annotations

import datetime
import json
import os

import attrs

from fn_core import APIError, hookimpl
from fn_core.errors import ConfigError

__version__ = "0.1.0"


@attrs.frozen(eq=False)  # a plugin object: the manager tells its plugins apart by identity, not by value
class AuditLog:
    """One plugin manager's ``[plugins.audit-log]`` with a ``path``: the log's open file."""

    path: str
    fd: int

    @classmethod
    def open(cls, path: object) -> AuditLog:
        """The log opened for appending; a bad path stops start-up naming it."""
        if not isinstance(path, str) or not path:
            raise ConfigError(f"[plugins.audit-log] path must name the file the audit log is appended to, got {path!r}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise ConfigError(f"[plugins.audit-log] path: cannot append to {path}: {exc.strerror}") from None
        return cls(path=path, fd=fd)

    @hookimpl
    def object_changed(self, action, app, fn, trigger):
        what, kind = (trigger, "trigger") if trigger is not None else (fn, "fn") if fn is not None else (app, "app")
        record = {"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"), "action": action,
                  "kind": kind, "id": what.id, "name": what.name, "app_id": app.id, "app_name": app.name}
        if kind == "trigger":
            record.update(fn_id=fn.id, source=trigger.source)
        elif kind == "fn":
            record["image"] = fn.image
        # one write(2) of one line to a file opened O_APPEND: whole lines, in order, from every node of the host
        # writing to it; done here and not in a thread (the hook must not block, but API changes are rare, not per
        # call, and a line queued for a thread could be lost at exit)
        os.write(self.fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())


@attrs.frozen(eq=False)
class KeepApps:
    """One plugin manager's ``keep_annotation``: an app that carries it cannot be deleted."""

    annotation: str

    @hookimpl
    def validate_delete(self, app, fn, trigger):
        if fn is None and self.annotation in app.annotations:
            raise APIError(f"app {app.name} carries the annotation {self.annotation}: remove it to delete the app",
                           status=409)


@hookimpl
def configure(config, plugin_manager):
    """Each setting given registers what does it; none given, the plugin does nothing (a node that stores no apps,
    an LB reading them from an API node, may share the others' image and leave the table out)."""
    own = config.plugin_settings("audit-log", known=("path", "keep_annotation"))
    if "path" in own:
        plugin_manager.register(AuditLog.open(own["path"]), name="audit-log:log")
    keep = own.get("keep_annotation")
    if keep is not None:
        if not isinstance(keep, str) or not keep:
            raise ConfigError(f"[plugins.audit-log] keep_annotation must be an annotation key, got {keep!r}")
        plugin_manager.register(KeepApps(keep), name="audit-log:keep")
