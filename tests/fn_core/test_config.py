"""Config: defaults < TOML file < FN_* environment < flags, with clear errors."""

import pytest

from fn_core.config import Config, load_config, variables_without_effect
from fn_core.errors import ConfigError


def test_defaults_are_fns_where_fn_has_the_setting():
    config = load_config(env={})
    assert (config.port, config.grpc_port, config.max_request_size, config.hot_start_timeout_msecs) == (8080, 9190, 0, 5000)
    assert config.placer == "ch" and config.driver == "docker" and config.host == "0.0.0.0"


def test_precedence_file_then_env_then_flags(tmp_path):
    path = tmp_path / "fn.toml"
    path.write_text('port = 1111\ngrpc_port = 2222\nplacer = "naive"\nrunner_addresses = ["a:1"]\n')
    config = load_config(path, env={"FN_GRPC_PORT": "3333", "FN_PLACER": "ch"}, overrides={"placer": "naive", "host": None})
    assert config.port == 1111  # file
    assert config.grpc_port == 3333  # env beats file
    assert config.placer == "naive"  # flag beats env
    assert config.runner_addresses == ["a:1"]
    assert config.host == "0.0.0.0"  # a flag not given changes nothing


def test_a_variable_a_flag_replaces_is_not_read_and_so_not_refused():
    """FN_PORT=abc fn-core lb --port 18086 stopped start-up over a value the flag replaced."""
    assert load_config(env={"FN_PORT": "abc"}, overrides={"port": 18086}).port == 18086
    with pytest.raises(ConfigError, match=r"port \(from \$FN_PORT\): 'abc' is not a valid int"):
        load_config(env={"FN_PORT": "abc"}, overrides={"port": None})  # no flag given: it is read


def test_a_file_value_a_variable_or_flag_replaces_is_not_read_either(tmp_path):
    path = tmp_path / "fn.toml"
    path.write_text('port = "abc"\ngrpc_port = "x"\n')
    config = load_config(path, env={"FN_GRPC_PORT": "9999"}, overrides={"port": 18086})
    assert (config.port, config.grpc_port) == (18086, 9999)
    with pytest.raises(ConfigError, match="'x' is not a valid int"):
        load_config(path, env={}, overrides={"port": 18086})  # the file's grpc_port is what counts: it is read


def test_env_lists_and_bools():
    config = load_config(env={"FN_RUNNER_ADDRESSES": "10.0.0.1:9190, r2:9191", "FN_ENABLE_NB_RESOURCE_TRACKER": "1"})
    assert config.runner_addresses == ["10.0.0.1:9190", "r2:9191"]
    assert config.enable_nb_resource_tracker is True
    # Fn separates FN_DOCKER_NETWORKS by spaces
    assert load_config(env={"FN_DOCKER_NETWORKS": "net-a  net-b"}).docker_networks == ["net-a", "net-b"]


def test_config_file_from_fn_config(tmp_path):
    path = tmp_path / "fn.toml"
    path.write_text("max_response_size = 6291456\n")
    assert load_config(env={"FN_CONFIG": str(path)}).max_response_size == 6291456


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FN_PORT": "70000"}, "port (from $FN_PORT) must be a TCP port"),
        ({"FN_PORT": "eighty"}, "port (from $FN_PORT): 'eighty' is not a valid int"),
        ({"FN_MAX_TOTAL_MEMORY_BYTES": "-1"}, "max_total_memory_bytes (from $FN_MAX_TOTAL_MEMORY_BYTES) must not be negative"),
        ({"FN_RUNNER_ADDRESSES": "nohostport"}, "runner_addresses (from $FN_RUNNER_ADDRESSES): 'nohostport' is not host:port"),
        ({"FN_LOG_LEVEL": "loud"}, "log_level (from $FN_LOG_LEVEL) must be one of"),
        ({"FN_ENABLE_NB_RESOURCE_TRACKER": "maybe"}, "not a valid bool"),
    ],
)
def test_bad_values_give_clear_errors(env, message):
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [('{"auths": {"r.example:5000": {"auth": "s3cret', "docker_auth (from $FN_DOCKER_AUTH) is not valid JSON"), ('["s3cret"]', "must be a JSON object")],
)
def test_registry_credentials_are_never_echoed(tmp_path, value, message):
    with pytest.raises(ConfigError) as err:
        load_config(env={"FN_DOCKER_AUTH": value})
    assert message in str(err.value) and "s3cret" not in str(err.value)
    path = tmp_path / "fn.toml"
    path.write_text('[docker_auth]\nauths = "s3cret"\n')  # a table where a JSON string belongs
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert "not a valid str" in str(err.value) and "s3cret" not in str(err.value)
    good = load_config(env={"FN_DOCKER_AUTH": '{"auths": {"r.example:5000": {"auth": "czNjcmV0OnMzY3JldA=="}}}'})
    assert "czNjcmV0" not in repr(good)


def test_unknown_file_keys_warn_or_fail_in_strict_mode(tmp_path, caplog):
    path = tmp_path / "fn.toml"
    path.write_text("prot = 1\n")
    config = load_config(path, env={})
    assert config == Config()
    # kept for the CLI to log once FN_LOG_DEST and FN_LOG_FORMAT are in force, not logged before them
    assert config.load_warnings == (f"config file {path}: unknown key 'prot': did you mean 'port'?; ignored",)
    path.write_text("colour = 1\n")  # nothing like it: the keys are listed
    [warning] = load_config(path, env={}).load_warnings
    assert warning.startswith(f"config file {path}: unknown key 'colour': the keys: api_cors_headers, ")
    assert "load_warnings" not in warning  # not a setting: not among the keys
    assert caplog.text == ""
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_config(path, env={"FN_STRICT_CONFIG": "true"})


def test_broken_toml_and_missing_file(tmp_path):
    path = tmp_path / "fn.toml"
    path.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_a_config_file_that_is_a_directory_or_not_utf8_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read: Is a directory"):
        load_config(tmp_path, env={})
    path = tmp_path / "fn.toml"
    path.write_bytes(b"\xff\xfeport = 1\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path, env={})


def test_load_warnings_is_no_setting_a_file_or_flag_can_set(tmp_path):
    path = tmp_path / "fn.toml"
    path.write_text('load_warnings = ["x"]\n')
    warnings = load_config(path, env={}).load_warnings
    assert len(warnings) == 1 and f"config file {path}: unknown key 'load_warnings'" in warnings[0]
    with pytest.raises(ConfigError, match="unknown setting 'load_warnings'"):
        load_config(env={}, overrides={"load_warnings": ("x",)})


def test_sqlite_path_from_db_url():
    assert load_config(env={"FN_DB_URL": "sqlite3:///var/lib/fn/fn.db"}).db_path == "/var/lib/fn/fn.db"
    with pytest.raises(ConfigError, match="not supported"):
        _ = load_config(env={"FN_DB_URL": "postgres://x"}).db_path


def test_readme_documents_every_setting_with_its_help_text():
    from pathlib import Path

    import attrs

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for field in attrs.fields(Config):
        env = field.metadata.get("env")
        if env:
            row = next((line for line in readme.splitlines() if line.startswith(f"| `{field.name}` | `{env}` |")), None)
            assert row is not None, f"README's config reference lacks {field.name}"
            # the table says what `--help` and the code say: an operator reads either
            assert row.endswith(f" | {field.metadata['help']} |"), f"README's row of {field.name} is not its help text"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30", 30.0), ("2.5", 2.5), ("0", 0.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("250us", 0.00025),
     ("10µs", 0.00001), ("1h2m3.5s", 3723.5), ("1.5m", 90.0), (" 45s ", 45.0)],
)
def test_http_timeouts_take_seconds_or_go_durations(value, seconds):
    config = load_config(env={"FN_HTTP_IDLE_TIMEOUT": value, "FN_REQUEST_BODY_READ_TIMEOUT": value})
    assert config.http_idle_timeout_s == config.request_body_read_timeout_s == pytest.approx(seconds)


def test_http_timeouts_from_the_config_file(tmp_path):
    path = tmp_path / "fn.toml"
    path.write_text('http_idle_timeout_s = 20\nrequest_body_read_timeout_s = "1m"\n')
    config = load_config(path, env={})
    assert (config.http_idle_timeout_s, config.request_body_read_timeout_s) == (20.0, 60.0)
    assert (Config().http_idle_timeout_s, Config().request_body_read_timeout_s) == (0.0, 0.0)  # default: no limit of ours


@pytest.mark.parametrize("value", ["bad", "-1", "-1s", "1d", "30 s", "s", " s", "inf", "nan", "1e3"])
def test_a_bad_http_timeout_names_the_variable_and_the_value(value):
    with pytest.raises(ConfigError) as err:
        load_config(env={"FN_REQUEST_BODY_READ_TIMEOUT": value})
    said = "must not be negative (a duration" if value.startswith("-") else "is not a valid duration"
    assert f"request_body_read_timeout_s (from $FN_REQUEST_BODY_READ_TIMEOUT): {value!r} {said}" in str(err.value)
    with pytest.raises(ConfigError, match="must not be negative"):
        Config(http_idle_timeout_s=-1.0)


def test_an_fn_variable_without_effect_is_named_when_set():
    env = {"FN_ZIPKIN_URL": "http://127.0.0.1:9411/api/v2/spans", "FN_JAEGER_URL": "http://127.0.0.1:14268/api/traces",
           "FN_HOT_POLL_MSECS": "200", "FN_HOT_LAUNCHER_TIMEOUT_MSECS": ""}
    # FN_ZIPKIN_URL and FN_JAEGER_URL have their effect (fn_plugins_builtin.tracing); a variable set empty is not named
    assert variables_without_effect(env) == [
        "FN_HOT_POLL_MSECS is set, but has no effect in fn-core: waiting calls are woken when a container frees, not by polling"
    ]


@pytest.mark.parametrize(("value", "level"), [("DEBUG", "debug"), ("Info", "info"), ("warn", "warning"), ("WARNING", "warning"),
                                               ("trace", "debug"), ("Fatal", "error"), ("panic", "error")])  # logrus' others
def test_fn_log_level_reads_fns_spellings(value, level):
    assert load_config(env={"FN_LOG_LEVEL": value}).log_level == level


def test_an_empty_fn_iofs_path_is_the_default_dir_as_fns_empty_one_is_its_temp_dir():
    assert load_config(env={"FN_IOFS_PATH": ""}).iofs_path == Config().iofs_path == "/tmp/fn-core-iofs"


def test_an_empty_numeric_variable_is_unset_as_fn_reads_it():
    config = load_config(env={"FN_MAX_PIDS": "", "FN_PLACER_TIMEOUT": " ", "FN_HTTP_IDLE_TIMEOUT": ""})
    assert (config.max_pids, config.placer_timeout_s, config.http_idle_timeout_s) == (Config().max_pids, 360.0, 0.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FN_RUNNER_ADDRESSES": "a:1 b:2"}, "runner_addresses (from $FN_RUNNER_ADDRESSES): 'a:1 b:2' is not host:port"),
        ({"FN_RUNNER_ADDRESSES": "a:1;b:2"}, "runner_addresses (from $FN_RUNNER_ADDRESSES): 'a:1;b:2' is not host:port"),
        ({"FN_RUNNER_ADDRESSES": "http://a:9190"}, "runner_addresses (from $FN_RUNNER_ADDRESSES): 'http://a:9190' is not host:port"),
        ({"FN_RUNNER_ADDRESSES": "::1:9190"}, "runner_addresses (from $FN_RUNNER_ADDRESSES): '::1:9190' is not host:port (an IPv6 address goes in brackets: [::1]:port)"),
        ({"FN_RUNNER_API_URL": "http://fn-api:8080/v2"}, "runner_api_url (from $FN_RUNNER_API_URL): 'http://fn-api:8080/v2' ends in /v2: give the API node's base URL (fn-core adds /v2/...), e.g. http://fn-api:8080"),
        ({"FN_RUNNER_API_URL": "http://gw/fn/v2/"}, "runner_api_url (from $FN_RUNNER_API_URL): 'http://gw/fn/v2/' ends in /v2: give the API node's base URL (fn-core adds /v2/...), e.g. http://fn-api:8080"),
        ({"FN_PLACER_TIMEOUT": "nan"}, "placer_timeout_s (from $FN_PLACER_TIMEOUT): 'nan' is not a valid float"),
        ({"FN_PLACER_TIMEOUT": "inf"}, "placer_timeout_s (from $FN_PLACER_TIMEOUT): 'inf' is not a valid float"),
    ],
)
def test_values_that_would_be_misread_are_refused(env, message):
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert str(err.value).endswith(message)  # and says no more (no hint that does not fit)


def test_runner_addresses_may_be_names_ipv4_or_bracketed_ipv6_and_the_api_url_a_path_prefix():
    addresses = "runner-1.fn.svc.cluster.local:9190,10.0.0.7:9190,[::1]:9190,[fe80::1%eth0]:9190"
    config = load_config(env={"FN_RUNNER_ADDRESSES": addresses, "FN_RUNNER_API_URL": "https://gateway/fn-api"})
    assert config.runner_addresses == addresses.split(",")
    assert config.runner_api_url == "https://gateway/fn-api"


def test_an_fn_variable_spelled_nearly_as_one_of_ours_is_named_with_the_one_meant():
    env = {"FN_PLACR": "naive", "FN_RUNNER_ADDRESS": "a:1", "FN_PORT": "8081",
           # Fn's CLI's and the FDK's variables are not ours misspelled, though FN_FORMAT is close to FN_LOG_FORMAT
           "FN_API_URL": "http://localhost:8080", "FN_FORMAT": "http-stream", "FN_REGISTRY": "example", "FN_UNRELATED_THING": "1"}
    config = load_config(env=env)
    assert config.placer == "ch" and config.port == 8081
    assert config.load_warnings == (
        "FN_PLACR is set, but fn-core reads no such variable: did you mean FN_PLACER?",
        "FN_RUNNER_ADDRESS is set, but fn-core reads no such variable: did you mean FN_RUNNER_ADDRESSES?",
    )


def test_under_fn_strict_config_a_misspelled_fn_variable_stops_start_up():
    with pytest.raises(ConfigError, match=r"^FN_PLACR is set, but fn-core reads no such variable: did you mean FN_PLACER\?$"):
        load_config(env={"FN_PLACR": "naive", "FN_STRICT_CONFIG": "1"})


def test_under_fn_strict_config_every_problem_is_said_at_once(tmp_path):
    """An operator fixes them all before the next start, not one a restart."""
    path = tmp_path / "fn.toml"
    path.write_text('placr = "naive"\ngrace = 5\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path, env={"FN_PLACR": "naive", "FN_STRICT_CONFIG": "1"})
    lines = str(refused.value).splitlines()
    assert lines[:2] == ["3 problems (FN_STRICT_CONFIG):", f"  config file {path}: unknown key 'placr': did you mean 'placer'?"]
    assert lines[2].startswith(f"  config file {path}: unknown key 'grace': the keys: ")
    assert lines[3:] == ["  FN_PLACR is set, but fn-core reads no such variable: did you mean FN_PLACER?"]


def test_a_fractional_port_in_the_file_is_refused_not_cut(tmp_path):
    path = tmp_path / "fn.toml"
    path.write_text("port = 8000.5\n")
    with pytest.raises(ConfigError, match=r"port \(from .*fn.toml\): 8000.5 is not a valid int"):
        load_config(path, env={})


def test_fn_strict_config_in_the_environment_outranks_the_file(tmp_path):
    path = tmp_path / "fn.toml"
    path.write_text("strict = false\nno_such_key = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'no_such_key'"):
        load_config(path, env={"FN_STRICT_CONFIG": "1"})
    assert load_config(path, env={}).strict is False  # the file alone: a warning


def test_a_refused_url_is_quoted_without_its_password():
    with pytest.raises(ConfigError) as caught:
        load_config(env={"FN_ZIPKIN_URL": "zipkin://user:s3cret@collector:9411/api/v2/spans"})
    assert "s3cret" not in str(caught.value) and "'zipkin://user:***@collector:9411/api/v2/spans'" in str(caught.value)


def test_a_plugin_that_names_its_keys_has_a_misspelled_one_refused(tmp_path):
    path = tmp_path / "fn.toml"
    path.write_text('[plugins.audit]\npaht = "/var/log/audit"\nlevel = 2\n')
    config = load_config(path, env={})
    assert config.plugin_settings("audit") == {"paht": "/var/log/audit", "level": 2}  # no keys named: the table as it is
    assert config.plugin_settings("other", known=["path"]) == {}
    with pytest.raises(ConfigError, match=r"^\[plugins.audit\]: unknown keys \['paht'\]; known: \['level', 'path'\] "
                                          r"\(did you mean 'path'\?\)$"):
        config.plugin_settings("audit", known=["path", "level"])
