"""A function image made with Fn's Node FDK (npm's ``@fnproject/fdk``), built here with no registry of images.

Fn runs functions of every language its FDKs speak http-stream in; the Python FDK's image is the one the other tests
use (`fn_core.images`). This one is the host's ``node`` (with the shared libraries ``ldd`` names), the FDK's package
as npm's registry serves it (its sha512 checked), and ``node/func.js``, imported ``FROM scratch``. The FDK needs
only node's own modules, so npm itself is not needed (Debian's ``node`` keeps a few of those in ``/usr/share/nodejs``:
taken too). `scripts/ensure-node.sh` installs Debian's ``nodejs`` when the host has no ``node`` (the test command
runs it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import urllib.request
from pathlib import Path

from fn_core.images import IMAGE_LABEL, add_file

FDK_PACKAGE = "@fnproject/fdk"
FDK_VERSION = "0.0.76"
REGISTRY = "https://registry.npmjs.org"
FUNCTION = Path(__file__).resolve().parent / "node" / "func.js"
FETCH_TIMEOUT_S = 60
#: Debian's nodejs reads a few of its own builtins (acorn, cjs-module-lexer, undici) from here as it starts: its build
#: keeps them out of libnode, and without them node aborts ("Cannot load externalized builtin"); other builds have none
DEBIAN_NODE_BUILTINS = Path("/usr/share/nodejs")


def node_binary() -> str:
    found = shutil.which("node")
    assert found, "the Node FDK test needs `node` on PATH: scripts/ensure-node.sh installs Debian's nodejs"
    return os.path.realpath(found)


def _fdk_tarball() -> bytes:
    """The FDK's package from npm's registry, checked against the integrity the registry states for it."""
    with urllib.request.urlopen(f"{REGISTRY}/{FDK_PACKAGE}/{FDK_VERSION}", timeout=FETCH_TIMEOUT_S) as answer:
        dist = json.load(answer)["dist"]
    with urllib.request.urlopen(dist["tarball"], timeout=FETCH_TIMEOUT_S) as answer:
        data = answer.read()
    algorithm, _, digest = dist["integrity"].partition("-")
    checked = algorithm == "sha512" and hashlib.sha512(data).digest() == base64.b64decode(digest)
    assert checked, f"the FDK's tarball from {dist['tarball']} is not the one npm's registry lists"
    return data


def _rootfs(node: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
        add_file(tar, "usr/bin/node", Path(node).read_bytes(), 0o755)
        libs = subprocess.run(["ldd", node], capture_output=True, text=True, check=True).stdout
        for lib in sorted({token for token in libs.split() if token.startswith("/")}):
            add_file(tar, lib.lstrip("/"), Path(os.path.realpath(lib)).read_bytes(), 0o755)
        for path in sorted(DEBIAN_NODE_BUILTINS.rglob("*")):
            if path.is_file() and not path.is_symlink():
                add_file(tar, str(path).lstrip("/"), path.read_bytes())
        with tarfile.open(fileobj=io.BytesIO(_fdk_tarball()), mode="r:gz") as package:
            for member in package.getmembers():
                if member.isfile() and member.name.startswith("package/"):
                    data = package.extractfile(member).read()  # type: ignore[union-attr]
                    add_file(tar, f"function/node_modules/{FDK_PACKAGE}/{member.name.removeprefix('package/')}", data)
        add_file(tar, "function/func.js", FUNCTION.read_bytes())
    return buf.getvalue()


def build_node_function(client) -> str:
    """The Node FDK function's image (built once per node binary, FDK version and ``func.js``); its tag."""
    import docker.errors

    node = node_binary()
    recipe = Path(__file__).read_bytes() + FUNCTION.read_bytes() + str(os.stat(node).st_size).encode()
    tag = f"fn-core-test/node-fdk:{FDK_VERSION}-{hashlib.sha256(recipe).hexdigest()[:10]}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    repo, _, version = tag.partition(":")
    client.api.import_image_from_data(
        _rootfs(node),
        repository=repo,
        tag=version,
        changes=["WORKDIR /function", 'ENTRYPOINT ["/usr/bin/node", "/function/func.js"]', f"LABEL {IMAGE_LABEL}=function"],
    )
    return tag
