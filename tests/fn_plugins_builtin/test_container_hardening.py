"""The container hardening as the function sees it from inside (real LB, gRPC, runner and Docker): the read-only
root fs, the unprivileged user without capabilities, the ulimits, the pids limit and the /tmp tmpfs, by default
and as each setting changes them. `test_driver_docker.py` checks what the driver asks Docker for; these check
what the kernel then holds the function to (echo's ``whoami``, ``limits``, ``mounts``, ``spawn``, ``files``)."""

from __future__ import annotations

import json
from typing import Any

from fn_core import hookimpl

TMPFS_MB = "fn-core-test/tmpfs-mb"
ULIMITS = ("Max open files", "Max locked memory", "Max pending signals", "Max msgqueue size")
CAP_CHOWN, CAP_NET_BIND_SERVICE = 1 << 0, 1 << 10  # in Docker's default set
EAGAIN, ENOSPC, EROFS, EACCES = "Resource temporarily unavailable", "No space left on device", "Read-only file system", "Permission denied"


class TmpfsFromAnnotation:
    """An fn's annotation gives its calls a tmpfs_size (MB): the v2 API has no such fn field (Fn's has none
    either), so an `override_call` plugin is how a call gets one."""

    @hookimpl
    def override_call(self, call, extensions):
        if TMPFS_MB in call.annotations:
            call.tmpfs_size = int(call.annotations[TMPFS_MB])


async def ask(platform: Any, fn: dict[str, Any], **body: Any) -> Any:
    result = await platform.invoke(fn["id"], json.dumps(body))
    assert result.status == 200, result.body
    return result.json()


def unprivileged(who: dict[str, Any]) -> bool:
    caps = [who[f"cap_{name}"] for name in ("inh", "prm", "eff", "bnd", "amb")]
    return who["uid"] == who["gid"] == [1000] * 4 and caps == [0] * 5 and who["no_new_privs"] == 1


async def test_by_default_a_function_is_read_only_unprivileged_and_held_to_fns_limits(fn_platform, echo_image):
    platform = await fn_platform()
    fn = await platform.deploy(echo_image)

    assert await ask(platform, fn, fill="/hardening-probe") == {"written": 0, "error": EROFS}
    assert await ask(platform, fn, fill="/tmp/probe", fill_kb=4) == {"written": 4096, "error": ""}
    mounts = await ask(platform, fn, mounts=True)
    assert "ro" in mounts["/"]["options"] and mounts["/tmp"]["type"] == "tmpfs"  # the one place to write

    who = await ask(platform, fn, whoami=True)
    assert unprivileged(who), who  # user 1000:1000, every capability dropped, even from the bounding set; no-new-privileges

    limits = await ask(platform, fn, limits=True)
    assert [limits[name] for name in ULIMITS] == [[350, 350], [65536, 65536], [5000, 5000], [819200, 819200]]

    spawned = await ask(platform, fn, spawn=60)
    assert spawned["error"] == EAGAIN and spawned["started"] < 50 and spawned["tasks"] == 50, spawned  # FN_MAX_PIDS 50
    # no nr_inodes unless FN_MAX_TMPFS_INODES asks for one
    assert await ask(platform, fn, files=500, dir="/tmp") == {"made": 500, "error": ""}


async def test_the_limits_set_are_the_ones_the_function_meets_and_tmpfs_size_bounds_tmp(fn_platform, echo_image):
    env = {
        "FN_MAX_PIDS": "20", "FN_MAX_OPEN_FILES": "100", "FN_MAX_LOCKED_MEMORY": "131072",
        "FN_MAX_PENDING_SIGNALS": "321", "FN_MAX_MESSAGE_QUEUE": "4096", "FN_MAX_TMPFS_INODES": "64",
    }
    platform = await fn_platform(env=env, plugins=(TmpfsFromAnnotation(),))
    fn = await platform.deploy(echo_image, name="limited")
    sized = await platform.deploy(echo_image, name="sized", annotations={TMPFS_MB: 4})

    limits = await ask(platform, fn, limits=True)
    assert [limits[name] for name in ULIMITS] == [[100, 100], [131072, 131072], [321, 321], [4096, 4096]]

    assert await ask(platform, fn, spawn=5) == {"started": 5, "error": "", "tasks": 7}  # docker-init, the fdk and 5
    spawned = await ask(platform, fn, spawn=30)
    assert spawned["error"] == EAGAIN and spawned["started"] < 20 and spawned["tasks"] == 20, spawned

    # nr_inodes=64 counts /tmp itself and the /tmp/iofs mount point: 62 files fit
    assert "nr_inodes=64" in (await ask(platform, fn, mounts=True))["/tmp"]["super"]
    assert await ask(platform, fn, files=100, dir="/tmp") == {"made": 62, "error": ENOSPC}
    assert await ask(platform, fn, files=62, dir="/tmp") == {"made": 62, "error": ""}  # the limit, not a leftover

    tmp = (await ask(platform, sized, mounts=True))["/tmp"]
    assert tmp["type"] == "tmpfs" and {"size=4096k", "nr_inodes=64"} <= set(tmp["super"]), tmp
    assert await ask(platform, sized, fill="/tmp/big", fill_kb=8192) == {"written": 4 * 1024 * 1024, "error": ENOSPC}
    assert await ask(platform, sized, fill="/tmp/big", fill_kb=4096) == {"written": 4 * 1024 * 1024, "error": ""}


async def test_a_writable_root_fs_keeps_the_function_unprivileged_and_tmp_on_it_unless_sized(fn_platform, echo_image):
    platform = await fn_platform(env={"FN_DISABLE_READONLY_ROOTFS": "true"}, plugins=(TmpfsFromAnnotation(),))
    fn = await platform.deploy(echo_image, name="plain")
    sized = await platform.deploy(echo_image, name="sized", annotations={TMPFS_MB: 4})

    mounts = await ask(platform, fn, mounts=True)
    assert "rw" in mounts["/"]["options"] and "/tmp" not in mounts  # no tmpfs: /tmp is the image's, on the root fs
    # the file system takes writes now; user 1000 still may not write to a directory of root's
    assert await ask(platform, fn, fill="/hardening-probe") == {"written": 0, "error": EACCES}
    assert await ask(platform, fn, fill="/tmp/probe", fill_kb=4) == {"written": 4096, "error": ""}
    who = await ask(platform, fn, whoami=True)
    assert unprivileged(who), who

    tmp = (await ask(platform, sized, mounts=True))["/tmp"]  # a tmpfs_size still gets its tmpfs, on a writable root too
    assert tmp["type"] == "tmpfs" and "size=4096k" in tmp["super"], tmp
    assert await ask(platform, sized, fill="/tmp/big", fill_kb=8192) == {"written": 4 * 1024 * 1024, "error": ENOSPC}


async def test_with_both_turned_off_the_function_runs_as_the_images_root_with_dockers_capabilities(fn_platform, echo_image, docker_client):
    env = {"FN_DISABLE_READONLY_ROOTFS": "true", "FN_DISABLE_UNPRIVILEGED_CONTAINERS": "true"}
    platform = await fn_platform(env=env)
    fn = await platform.deploy(echo_image)

    assert docker_client.images.get(echo_image).attrs["Config"].get("User") in ("", None)  # the image names no user: root
    who = await ask(platform, fn, whoami=True)
    assert who["uid"] == who["gid"] == [0] * 4 and who["no_new_privs"] == 0, who
    assert who["cap_eff"] == who["cap_prm"] == who["cap_bnd"] and (who["cap_eff"] & (CAP_CHOWN | CAP_NET_BIND_SERVICE)) == CAP_CHOWN | CAP_NET_BIND_SERVICE, who
    assert await ask(platform, fn, fill="/hardening-probe") == {"written": 1024, "error": ""}
    limits = await ask(platform, fn, limits=True)  # the ulimits do not depend on the user
    assert [limits[name] for name in ULIMITS] == [[350, 350], [65536, 65536], [5000, 5000], [819200, 819200]]
