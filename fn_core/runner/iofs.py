"""Each hot container's socket directory ("iofs"): where its fdk binds ``lsnr.sock``, bound into it at /tmp/iofs.

The directory is writable from inside the container (the fdk must bind its socket there), so by default
a function can put files in it, on the runner's disk under ``FN_IOFS_PATH``. With ``FN_IOFS_TMPFS``, as in
Fn (api/agent/iofs_linux.go), each directory is a tmpfs of its own, mounted noexec, nosuid and nodev with
the options of ``FN_IOFS_OPTS`` (e.g. ``size=1m,nr_inodes=64``): what a function writes there is bounded
and goes with the container. Mounting needs root (CAP_SYS_ADMIN), and the Docker engine must see the
runner's mounts (the same mount namespace, as a runner on the host has), else containers would get the
empty directory underneath. `SocketDirs.check` tries both options and rights once, at start-up.

Next to each directory ``<root>/<8 hex>`` lies ``<root>/<8 hex>.owner``, which holds the runner's
``FN_CONTAINER_LABEL_TAG``: the tag its containers carry (`fn_core.runner.driver.label_tag`). A runner that was
killed leaves its directories (with ``FN_IOFS_TMPFS`` their mounts) behind; the next runner with the same tag, set
explicitly, unmounts and deletes them at start-up, as its driver removes the containers they were for (Fn's rule: a
runner without a tag of its own sweeps nothing, as it cannot tell a dead runner's dirs from a live neighbour's).
Those of runners with other tags are left alone. The tag is in a file of its own, not in the directory's name,
because the socket's path must stay short (AF_UNIX: 108 bytes).

The root is the runner's own and 0700: the Docker engine (root, or the same user when rootless) still binds each
directory into its container, where only that one is seen, but no other user of the host can reach a container's
socket, nor what a function left in its directory (a setuid file). `SocketDirs.check` refuses a root that another
user owns or may write to, as whoever can write there could make the runner unmount or delete what the names
they plant point at; one of ours that is more open (0755 before) is made 0700.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import secrets
import shutil
import stat

from fn_core.errors import ConfigError
from fn_core.runner.driver import UNSET_LABEL_TAG, label_tag, sweeps_leftovers
from fn_core.runner.uds import SOCKET_NAME

# <sys/mount.h>
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH, UMOUNT_NOFOLLOW = 2, 8
TMPFS_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC
OWNER_SUFFIX = ".owner"
DIR_NAME_CHARS = 8  # secrets.token_hex(4)
HEX = frozenset("0123456789abcdef")
#: a unix socket's path is at most 107 bytes (sun_path is 108, with its NUL)
MAX_SOCKET_PATH_BYTES = 107

log = logging.getLogger(__name__)


class SocketDirs:
    """Makes and removes the socket directories of one runner, under ``root``."""

    def __init__(self, root: str, *, tmpfs: bool = False, opts: str = "", owner: str = UNSET_LABEL_TAG, sweeps: bool = True) -> None:
        """``sweeps``: `check` removes what an earlier runner with ``owner`` left (only for a tag that was set)."""
        self.root = root
        self.tmpfs = tmpfs
        self.opts = opts
        self.owner = owner
        self.sweeps = sweeps
        self._libc: ctypes.CDLL | None = None

    @classmethod
    def from_config(cls, config) -> SocketDirs:
        return cls(config.iofs_path, tmpfs=config.iofs_tmpfs, opts=config.iofs_opts, owner=label_tag(config),
                   sweeps=sweeps_leftovers(config))

    def check(self) -> None:
        """Sweep what a killed runner with our tag left, if the tag was set (module doc); then make and remove one
        directory, so that a runner that cannot mount its tmpfs stops at start-up with the reason (`ConfigError`),
        not at its first cold start."""
        longest = os.fsencode(os.path.join(self.root, "x" * DIR_NAME_CHARS, SOCKET_NAME))
        if len(longest) > MAX_SOCKET_PATH_BYTES:
            raise ConfigError(
                f"FN_IOFS_PATH {self.root!r} is too long: the containers' sockets under it ({longest.decode(errors='replace')!r}, "
                f"{len(longest)} bytes) would pass the {MAX_SOCKET_PATH_BYTES} bytes a unix socket's path may have; "
                f"use a directory of at most {MAX_SOCKET_PATH_BYTES - len(longest) + len(os.fsencode(self.root))} bytes"
            )
        self._own_root()
        swept = self.sweep() if self.sweeps else 0
        if swept:
            log.info("removed %d socket dir(s) under %s left by an earlier runner tagged %r", swept, self.root, self.owner)
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

    def _own_root(self) -> None:
        """Make the root 0700, or refuse one another user could write to (module doc); tighten one of ours."""
        root = self.root
        try:
            os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
            os.mkdir(root, 0o700)
            created = True
        except FileExistsError:
            created = False
        except OSError as exc:
            raise ConfigError(f"FN_IOFS_PATH {root!r} cannot be made: {exc.strerror}") from None
        euid = os.geteuid()
        link = os.lstat(os.path.normpath(root))  # "dir/" would follow a symlink
        # a symlink (a runner in a container may see the engine's dir so) is followed: it must be as much ours
        if stat.S_ISLNK(link.st_mode) and link.st_uid not in (euid, 0):
            raise ConfigError(
                f"FN_IOFS_PATH {root!r} is a symlink owned by uid {link.st_uid}, not by this runner (uid {euid}): that user could "
                f"point it elsewhere; remove it, or set FN_IOFS_PATH to a directory of the runner's own"
            )
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise ConfigError(f"FN_IOFS_PATH {root!r} is not a directory the runner can open: {exc.strerror}") from None
        try:
            st = os.fstat(fd)  # the directory itself, whatever was swapped at its path meanwhile
            if created:
                os.fchmod(fd, 0o700)  # whatever the umask or a default ACL made of it
                return
            if st.st_uid != euid:
                raise ConfigError(
                    f"FN_IOFS_PATH {root!r} is owned by uid {st.st_uid}, not by this runner (uid {euid}): that user could plant "
                    f"symlinks there for the runner to unmount and delete, and reach every container's socket; remove it (the "
                    f"runner then makes it, 0700), or set FN_IOFS_PATH to a directory of the runner's own"
                )
            if st.st_mode & 0o022:
                raise ConfigError(
                    f"FN_IOFS_PATH {root!r} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): other users could "
                    f"plant symlinks there for the runner to unmount and delete; remove it (the runner then makes it, 0700), or, "
                    f"if nothing in it is another user's, chmod 0700 it"
                )
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o700)  # 0755 before: other users could reach the containers' sockets
                log.info("made the socket dirs' root %s 0700 (was %04o): no other user may reach them", root, stat.S_IMODE(st.st_mode))
        finally:
            os.close(fd)

    def sweep(self) -> int:
        """Unmount and delete every directory under the root whose owner file names our tag; how many."""
        swept = 0
        tag = self.owner.encode()
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for entry in os.listdir(root_fd):
                name = entry.removesuffix(OWNER_SUFFIX)
                if name == entry or len(name) != DIR_NAME_CHARS or not HEX.issuperset(name):
                    continue  # not one we make (a bare ".owner" would name the root itself)
                if self._owner_of(root_fd, entry, len(tag)) != tag:
                    continue
                path = os.path.join(self.root, name)
                try:
                    kind = os.lstat(name, dir_fd=root_fd).st_mode
                except FileNotFoundError:
                    kind = None  # killed between the owner file and the directory: remove drops the file
                if kind is not None and not stat.S_ISDIR(kind):
                    # never ours: unmounting or deleting it would act on whatever it points at
                    log.warning("left %s alone: a socket dir of this runner's tag, but not a directory (a symlink?)", path)
                    continue
                self._unmount(path)  # whatever FN_IOFS_TMPFS was when it was made
                if self.remove(path):
                    swept += 1
                else:
                    log.warning("could not remove the socket dir %s left by an earlier runner (still mounted?)", path)
        finally:
            os.close(root_fd)
        return swept

    @staticmethod
    def _owner_of(root_fd: int, entry: str, size: int) -> bytes | None:
        """The tag in an owner file (a regular file: never through a symlink, nor blocking on a FIFO), else None."""
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=root_fd)
        except OSError:  # gone meanwhile, or a symlink
            return None
        try:
            return os.read(fd, size + 1) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        finally:
            os.close(fd)

    def make(self) -> str:
        """A new directory, 0777 (the container's user must bind its socket there); with tmpfs, mounted."""
        name = secrets.token_hex(DIR_NAME_CHARS // 2)
        path = os.path.join(self.root, name)
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # first: a runner killed at any step leaves nothing unowned
            owner_fd = os.open(name + OWNER_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=root_fd)
            with open(owner_fd, "wb") as f:
                f.write(self.owner.encode())
            try:
                os.mkdir(name, 0o700, dir_fd=root_fd)
                if self.tmpfs:
                    self._mount(path)
                # after the mount (the tmpfs's own root is what the container sees); by fd, never through a symlink
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
                try:
                    os.fchmod(fd, 0o777)
                finally:
                    os.close(fd)
            except BaseException:
                self.remove(path)
                raise
        finally:
            os.close(root_fd)
        return path

    def remove(self, path: str) -> bool:
        """Unmount (lazily: a late reader cannot block it) and delete; quiet, as it runs on every clean-up path.
        False if the directory is still there (its owner file stays, for the next runner's sweep)."""
        if self.tmpfs:
            self._unmount(path)
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            return False
        try:
            os.unlink(path + OWNER_SUFFIX)
        except FileNotFoundError:
            pass
        return True

    def _mount(self, path: str) -> None:
        libc = self._c()
        options = self.opts.encode() if self.opts else None
        if libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", TMPFS_FLAGS, options) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)

    def _unmount(self, path: str) -> None:
        # EINVAL (not mounted) is fine: nothing to undo; a symlink is never followed to another mount
        self._c().umount2(os.fsencode(path), MNT_DETACH | UMOUNT_NOFOLLOW)

    def _c(self) -> ctypes.CDLL:
        if self._libc is None:
            self._libc = ctypes.CDLL(None, use_errno=True)
        return self._libc
