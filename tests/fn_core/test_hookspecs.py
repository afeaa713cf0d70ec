"""hookspecs.py is the reference for plugin authors: every hook must be documented completely."""

import inspect

import pytest

from fn_core import hookspecs

CARD_HOOKS = {"override_call", "modify_container_options", "place_call", "runner_status"}


def all_specs():
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, "fn_core_spec")
    }


def test_the_design_cards_hooks_exist_with_their_exact_names():
    assert CARD_HOOKS <= set(all_specs())


@pytest.mark.parametrize("name", sorted(all_specs()))
def test_every_hookspec_has_a_complete_docstring(name):
    fn = all_specs()[name]
    doc = inspect.getdoc(fn) or ""
    for section in ("When:", "Node:", ":return:", "Errors:", "Example::"):
        assert section in doc, f"hookspec {name} lacks {section!r}"
    for param in inspect.signature(fn).parameters:
        assert f":param {param}:" in doc, f"hookspec {name} does not document argument {param!r}"
    summary = doc.splitlines()[0]
    assert summary.endswith(".") and len(summary) > 20, f"hookspec {name} needs a one-line summary"


def test_hook_kinds_match_the_contract():
    specs = all_specs()
    assert specs["place_call"].fn_core_spec["firstresult"] is True
    assert specs["configure"].fn_core_spec["historic"] is True
    for composing in ("override_call", "modify_container_options", "runner_status", "call_finished"):
        assert specs[composing].fn_core_spec["firstresult"] is False, composing


def test_docs_hook_reference_is_generated_from_the_current_hookspecs():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).parents[2]
    spec = importlib.util.spec_from_file_location("gen_hook_docs", root / "scripts/gen_hook_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (root / "docs/hooks.md").read_text() == gen.render(), "run: python scripts/gen_hook_docs.py"
