"""As a user runs it: the plugin pip-installed, an LB with its store and a runner, real HTTP, real Docker."""

import json

from fn_core.testing import listed_plugin


def test_fn_core_plugins_lists_the_installed_distribution():
    entry = listed_plugin("audit-log")
    assert (entry["distribution"], entry["version"]) == ("fn-audit-log", "0.1.0")


async def test_the_v2_apis_changes_are_logged_and_a_kept_app_stays(fn_platform, echo_image, tmp_path):
    log = tmp_path / "audit.jsonl"
    platform = await fn_platform(toml=f'[plugins.audit-log]\npath = "{log}"\nkeep_annotation = "example.com/keep"\n')
    fn = await platform.deploy(echo_image, app="shop", name="echo")
    assert (await platform.invoke(fn["id"], "hi")).status == 200  # a call is no change
    assert (await platform.api("PUT", f"/v2/fns/{fn['id']}", {"memory": 256})).status == 200
    assert (await platform.api("DELETE", f"/v2/fns/{fn['id']}")).status == 204
    kept = await platform.api("POST", "/v2/apps", {"name": "billing", "annotations": {"example.com/keep": True}})
    refused = await platform.api("DELETE", f"/v2/apps/{kept.json()['id']}")
    assert (refused.status, refused.json()) == (409, {"message": "app billing carries the annotation example.com/keep: "
                                                                 "remove it to delete the app"})
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["action"], line["kind"], line["name"]) for line in lines] == [
        ("created", "app", "shop"), ("created", "fn", "echo"), ("updated", "fn", "echo"), ("deleted", "fn", "echo"),
        ("created", "app", "billing")]
    assert lines[1]["image"] == echo_image and lines[1]["id"] == fn["id"]
