"""Regenerate fn_core/proto/runner_pb2*.py from proto/runner.proto; with --check, fail if stale.

`-Ifn_core/proto=proto` makes protoc see the file as fn_core/proto/runner.proto, so the
generated gRPC module imports `fn_core.proto.runner_pb2` (a package-correct import) while
the .proto itself stays package-less (method path /RunnerProtocol/Engage, as Fn has it).
"""

import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = ["runner_pb2.py", "runner_pb2.pyi", "runner_pb2_grpc.py"]


def generate(out: Path) -> None:
    args = ["protoc", "-Ifn_core/proto=proto", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", "proto/runner.proto"]
    include = Path(protoc.__file__).parent / "_proto"
    if protoc.main([*args, f"-I{include}"]) != 0:
        sys.exit("protoc failed")


def main() -> None:
    check = "--check" in sys.argv
    import os

    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = []
        for name in OUTPUTS:
            new, old = Path(tmp) / "fn_core/proto" / name, ROOT / "fn_core/proto" / name
            if not old.exists() or not filecmp.cmp(new, old, shallow=False):
                stale.append(name)
                if not check:
                    old.write_bytes(new.read_bytes())
        if check and stale:
            sys.exit(f"generated gRPC code is stale: {', '.join(stale)}; run `tox -e proto -- --write` or python scripts/gen_proto.py")
        print("proto: generated code is current" if not stale else f"proto: regenerated {', '.join(stale)}")


if __name__ == "__main__":
    main()
