"""Write docs/hooks.md from the docstrings in fn_core/hookspecs.py (the one source of truth).

`python scripts/gen_hook_docs.py` rewrites it; a test fails when it is stale.
"""

import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def render() -> str:
    from fn_core import hookspecs

    parts = [
        "# Hook reference\n",
        "Generated from [`fn_core/hookspecs.py`](../fn_core/hookspecs.py) by `python scripts/gen_hook_docs.py`; "
        "edit the docstrings there, not this file.\n",
        inspect.getdoc(hookspecs) + "\n",
    ]
    for name, fn in vars(hookspecs).items():
        if not (inspect.isfunction(fn) and hasattr(fn, "fn_core_spec")):
            continue
        opts = fn.fn_core_spec
        kind = "firstresult" if opts["firstresult"] else "historic" if opts["historic"] else "every impl runs"
        parts.append(f"## `{name}{inspect.signature(fn)}`\n\n*{kind}*\n\n{inspect.getdoc(fn)}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    (ROOT / "docs/hooks.md").write_text(render())
    print("wrote docs/hooks.md")
