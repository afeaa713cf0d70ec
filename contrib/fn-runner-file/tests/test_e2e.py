"""The pip-installed file pool, selected by config, drives a real LB over real runners and Docker."""


from fn_core.testing import listed_plugin, wait_until


def test_fn_core_plugins_lists_the_pool():
    entry = listed_plugin("runner-file")
    assert (entry["distribution"], entry["version"], entry["provides"]) == ("fn-runner-file", "0.1.0", ["runner-pool: file"])


async def test_the_lb_follows_the_file(fn_platform, echo_image, tmp_path):
    runners_file = tmp_path / "runners"
    toml = f'runner_pool = "file"\nrunner_pool_refresh_ms = 20\n[plugins.runner-file]\npath = "{runners_file}"\n'
    platform = await fn_platform(runners=2, toml=toml, from_pool=True)
    assert platform.pm.runner_pool.name == "file"
    first, second = platform.runners

    def pool():
        return [ref.address for ref in platform.lb.agent.pool.refs]

    assert pool() == []  # no file yet: no runners, the LB waits for the file
    runners_file.write_text(f"# the runners\n{first.address}\n")
    await wait_until(lambda: pool() == [first.address], "the file's runner joined")
    fn = await platform.deploy(echo_image)
    assert (await platform.invoke(fn["id"], "one")).body == b"one"

    runners_file.write_text(f"{second.address}  # first is being drained\n")
    await wait_until(lambda: pool() == [second.address], "the file's change was followed")
    result = await platform.invoke(fn["id"], "two")
    assert (result.status, result.body) == (200, b"two")
    assert (first.servicer.requests_received, second.servicer.requests_received) == (1, 1)
