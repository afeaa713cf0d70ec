"""Each hot container's socket directory ("iofs"): where its fdk binds ``lsnr.sock``, bound into it at /tmp/iofs.

The directory is writable from inside the container (the fdk must bind its socket there), so by default
a function can put files in it, on the runner's disk under ``FN_IOFS_PATH``. With ``FN_IOFS_TMPFS``, as in
Fn (api/agent/iofs_linux.go), each directory is a tmpfs of its own, mounted noexec, nosuid and nodev with
the options of ``FN_IOFS_OPTS`` (e.g. ``size=1m,nr_inodes=64``): what a function writes there is bounded
and goes with the container. Mounting needs root (CAP_SYS_ADMIN), and the Docker engine must see the
runner's mounts (the same mount namespace, as a runner on the host has), else containers would get the
empty directory underneath. `SocketDirs.check` tries both options and rights once, at start-up.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil

from fn_core.errors import ConfigError

# <sys/mount.h>
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH = 2
TMPFS_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC


class SocketDirs:
    """Makes and removes the socket directories of one runner, under ``root``."""

    def __init__(self, root: str, *, tmpfs: bool = False, opts: str = "") -> None:
        self.root = root
        self.tmpfs = tmpfs
        self.opts = opts
        self._libc: ctypes.CDLL | None = None

    @classmethod
    def from_config(cls, config) -> SocketDirs:
        return cls(config.iofs_path, tmpfs=config.iofs_tmpfs, opts=config.iofs_opts)

    def check(self) -> None:
        """Make and remove one directory, so that a runner that cannot mount its tmpfs stops at start-up
        with the reason (`ConfigError`), not at its first cold start."""
        os.makedirs(self.root, mode=0o755, exist_ok=True)
        if not self.tmpfs:
            return
        try:
            path = self.make()
        except OSError as exc:
            why = {
                errno.EPERM: "mounting needs root (CAP_SYS_ADMIN)",
                errno.EINVAL: f"the kernel refused FN_IOFS_OPTS {self.opts!r}",
            }.get(exc.errno or 0, exc.strerror)
            raise ConfigError(f"FN_IOFS_TMPFS: cannot mount a tmpfs under {self.root}: {why}") from None
        self.remove(path)

    def make(self) -> str:
        """A new directory, 0777 (the container's user must bind its socket there); with tmpfs, mounted."""
        path = os.path.join(self.root, secrets.token_hex(4))
        os.makedirs(path, mode=0o777)
        try:
            if self.tmpfs:
                self._mount(path)
            os.chmod(path, 0o777)  # after the mount: the tmpfs's own root is what the container sees
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return path

    def remove(self, path: str) -> None:
        """Unmount (lazily: a late reader cannot block it) and delete; quiet, as it runs on every clean-up path."""
        if self.tmpfs:
            self._unmount(path)
        shutil.rmtree(path, ignore_errors=True)

    def _mount(self, path: str) -> None:
        libc = self._c()
        options = self.opts.encode() if self.opts else None
        if libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", TMPFS_FLAGS, options) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)

    def _unmount(self, path: str) -> None:
        self._c().umount2(os.fsencode(path), MNT_DETACH)  # EINVAL (not mounted) is fine: nothing to undo

    def _c(self) -> ctypes.CDLL:
        if self._libc is None:
            self._libc = ctypes.CDLL(None, use_errno=True)
        return self._libc
