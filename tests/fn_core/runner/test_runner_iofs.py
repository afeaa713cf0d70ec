"""A container's socket dir (bound into it at /tmp/iofs, writable): a plain dir on the runner's disk by default,
a bounded tmpfs of its own with FN_IOFS_TMPFS and FN_IOFS_OPTS (Fn's iofs_linux.go). Real runner, Docker, gRPC."""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import subprocess

import attrs
import pytest

from fn_core.errors import ConfigError
from fn_core.runner.iofs import SocketDirs

KIB = 1024
NOBODY = 65534


@attrs.frozen
class Mount:
    fstype: str
    options: frozenset[str]  # the mount's own (nosuid, ...) and the file system's (size=...)


def mounts() -> dict[str, Mount]:
    """This process's mount table (the runner's, and the Docker engine's on this host), by mount point."""
    table = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            tail = fields[fields.index("-") + 1 :]  # fstype, source, super options
            table[fields[4]] = Mount(tail[0], frozenset(fields[5].split(",")) | frozenset(tail[2].split(",")))
    return table


@pytest.fixture
def iofs_root():
    """A root of our own: the other tests' runners share the default one. (Ask for it before `start`, so
    that it is cleaned up after the runner has stopped.)"""
    root = f"/tmp/fn-core-test-iofs-{secrets.token_hex(3)}"
    yield root
    dirs = SocketDirs(root, tmpfs=True)
    for path in mounts():  # never leave a mount behind, even when the test failed
        if path.startswith(root + "/"):
            dirs.remove(path)
    shutil.rmtree(root, ignore_errors=True)


async def test_by_default_a_function_can_write_to_its_socket_dir_on_the_runners_disk(iofs_root, start, rc):
    node = await start(iofs_path=iofs_root)
    result = await rc.run(node.address, rc.call(), {"fill": "/tmp/iofs/junk", "fill_kb": 512})
    assert result.finished.success, result.finished
    assert result.json() == {"written": 512 * KIB, "error": ""}
    [container] = node.agent.containers()
    assert os.path.getsize(os.path.join(container.iofs_dir, "junk")) == 512 * KIB  # on the host
    assert container.iofs_dir not in mounts()


async def test_with_iofs_tmpfs_what_a_function_writes_there_is_bounded_and_goes_with_its_container(iofs_root, start, rc):
    node = await start(iofs_path=iofs_root, iofs_tmpfs=True, iofs_opts="size=256k")
    result = await rc.run(node.address, rc.call(), {"fill": "/tmp/iofs/junk", "fill_kb": 1024})
    assert result.finished.success, result.finished
    answer = result.json()
    assert answer["error"] == "No space left on device"
    assert answer["written"] <= 256 * KIB
    [container] = node.agent.containers()
    mount = mounts()[container.iofs_dir]
    assert mount.fstype == "tmpfs"
    assert {"nosuid", "nodev", "noexec", "size=256k"} <= mount.options
    # the socket still works: the container serves its next call from the same dir
    again = await rc.run(node.address, rc.call(), b"still here")
    assert again.body == b"still here" and [c.id for c in node.agent.containers()] == [container.id]

    await node.stop(grace=5)
    assert not [path for path in mounts() if path.startswith(iofs_root + "/")]
    assert os.listdir(iofs_root) == []


async def test_options_the_kernel_refuses_stop_the_runner_at_start_up(iofs_root, start):
    with pytest.raises(ConfigError, match="FN_IOFS_TMPFS.*FN_IOFS_OPTS 'size=lots'"):
        await start(iofs_path=iofs_root, iofs_tmpfs=True, iofs_opts="size=lots")
    assert os.listdir(iofs_root) == []  # the trial dir is gone too


async def test_an_iofs_path_too_long_for_a_unix_socket_stops_the_runner_at_start_up(iofs_root, start):
    """Every call would fail opaquely ("error receiving function response") when the socket path cannot be bound."""
    long_root = f"{iofs_root}/{'x' * 100}"
    with pytest.raises(ConfigError, match=r"FN_IOFS_PATH '.*' is too long: .* the 107 bytes a unix socket's path may have"):
        await start(iofs_path=long_root)
    assert not os.path.exists(long_root)


async def test_a_runner_sweeps_the_socket_dirs_a_killed_runner_with_its_tag_left(iofs_root, start, rc, label_tag):
    """A runner killed with -9 leaves its containers' tmpfs mounts; the next one with its tag removes them
    (as its driver removes the containers), and leaves those of runners with other tags alone."""
    crashed = await start(iofs_path=iofs_root, iofs_tmpfs=True)
    assert (await rc.run(crashed.address, rc.call(), {"fill": "/tmp/iofs/junk", "fill_kb": 4})).finished.success
    [container] = crashed.agent.containers()
    left = container.iofs_dir
    other = SocketDirs(iofs_root, tmpfs=True, owner=f"{label_tag}-other").make()  # a live runner's, tagged otherwise
    assert {left, other} <= set(mounts())

    # `crashed` is never told: the next runner with its tag starts as after a kill -9
    await start(iofs_path=iofs_root, iofs_tmpfs=True)
    assert left not in mounts() and not os.path.exists(left) and not os.path.exists(left + ".owner")
    assert other in mounts()
    assert sorted(os.listdir(iofs_root)) == [os.path.basename(other), os.path.basename(other) + ".owner"]
    assert container.id not in {c.id for c in rc.containers()}  # and its driver removed the container


@pytest.mark.parametrize("tmpfs", [False, True], ids=["plain", "tmpfs"])
@pytest.mark.parametrize("existing", [False, True], ids=["made", "from-an-older-version"])
async def test_the_root_is_the_runners_alone_and_containers_still_get_their_dirs(iofs_root, start, rc, tmpfs, existing):
    """0700: the engine still binds each dir into its container, but no other user of the host can reach a
    container's socket (nor what its function left there). An older version's 0755 root of ours is tightened."""
    if existing:
        os.mkdir(iofs_root)
        os.chmod(iofs_root, 0o755)
    node = await start(iofs_path=iofs_root, iofs_tmpfs=tmpfs)
    assert os.stat(iofs_root).st_mode & 0o7777 == 0o700
    result = await rc.run(node.address, rc.call(), b"through a 0700 root")
    assert result.body == b"through a 0700 root", result.finished
    [container] = node.agent.containers()
    assert os.stat(container.iofs_dir).st_mode & 0o777 == 0o777  # the container's user binds its socket there
    assert (container.iofs_dir in mounts()) == tmpfs
    sock = os.path.join(container.iofs_dir, "lsnr.sock")
    assert os.path.exists(sock)
    seen = subprocess.run(["stat", sock], user=NOBODY, capture_output=True, text=True)
    assert seen.returncode != 0 and "Permission denied" in seen.stderr, seen


async def test_a_root_another_user_owns_stops_the_runner_at_start_up_and_nothing_in_it_is_touched(iofs_root, start, label_tag):
    """The audit's attack: a local user makes the root first, with an owner file of our tag beside a symlink to a
    mount of someone else's; the runner used to sweep it, unmounting the victim."""
    os.mkdir(iofs_root, 0o755)
    os.chown(iofs_root, NOBODY, NOBODY)
    with victim_mount(iofs_root) as victim:
        plant(iofs_root, "deadbeef", victim, label_tag)
        expected = (f"FN_IOFS_PATH '{iofs_root}' is owned by uid {NOBODY}, not by this runner (uid 0): that user could plant "
                    f"symlinks there for the runner to unmount and delete, and reach every container's socket; remove it (the "
                    f"runner then makes it, 0700), or set FN_IOFS_PATH to a directory of the runner's own")
        with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
            await start(iofs_path=iofs_root)
        assert victim in mounts()
    assert os.stat(iofs_root).st_uid == NOBODY and os.stat(iofs_root).st_mode & 0o777 == 0o755  # left as it was


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770], ids=oct)
async def test_a_root_others_may_write_to_stops_the_runner_at_start_up(iofs_root, start, mode):
    os.mkdir(iofs_root)
    os.chmod(iofs_root, mode)
    expected = (f"FN_IOFS_PATH '{iofs_root}' is writable by group or others (mode {mode:04o}): other users could plant "
                f"symlinks there for the runner to unmount and delete; remove it (the runner then makes it, 0700), or, if nothing "
                f"in it is another user's, chmod 0700 it")
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        await start(iofs_path=iofs_root)
    assert os.stat(iofs_root).st_mode & 0o7777 == mode  # not made private: others may have planted things


async def test_a_symlinked_root_another_user_owns_stops_the_runner_at_start_up(iofs_root, start, tmp_path):
    os.symlink(tmp_path, iofs_root)
    os.lchown(iofs_root, NOBODY, NOBODY)
    expected = (f"FN_IOFS_PATH '{iofs_root}' is a symlink owned by uid {NOBODY}, not by this runner (uid 0): that user could "
                f"point it elsewhere; remove it, or set FN_IOFS_PATH to a directory of the runner's own")
    with pytest.raises(ConfigError, match=f"^{re.escape(expected)}$"):
        await start(iofs_path=iofs_root)
    os.unlink(iofs_root)  # not a dir: the fixture's rmtree would not remove it


async def test_the_sweep_leaves_an_entry_of_its_tag_that_is_a_symlink_and_what_it_points_at(iofs_root, start, label_tag, caplog):
    """Only a directory the runner made is unmounted and deleted: never through a symlink (umount2 follows them)."""
    caplog.set_level(logging.WARNING, logger="fn_core.runner.iofs")
    os.mkdir(iofs_root, 0o700)
    with victim_mount(iofs_root) as victim:
        plant(iofs_root, "deadbeef", victim, label_tag)
        await start(iofs_path=iofs_root, iofs_tmpfs=True)
        assert victim in mounts() and os.listdir(victim) == ["precious"]
        assert os.path.islink(f"{iofs_root}/deadbeef")
        assert f"left {iofs_root}/deadbeef alone: a socket dir of this runner's tag, but not a directory" in caplog.text
        os.unlink(f"{iofs_root}/deadbeef")


def plant(root: str, name: str, target: str, tag: str) -> None:
    """A symlink where a socket dir would be, with an owner file of ``tag`` beside it."""
    os.symlink(target, os.path.join(root, name))
    with open(os.path.join(root, name + ".owner"), "w") as f:
        f.write(tag)


class victim_mount:
    """A tmpfs with a file in it, beside ``root`` (someone else's mount), unmounted at exit."""

    def __init__(self, root: str) -> None:
        self.parent = root + "-victim"

    def __enter__(self) -> str:
        os.mkdir(self.parent, 0o700)
        self.dirs = SocketDirs(self.parent, tmpfs=True, owner="victim")
        self.path = self.dirs.make()
        open(os.path.join(self.path, "precious"), "w").close()
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.dirs.remove(self.path)
        shutil.rmtree(self.parent, ignore_errors=True)
