"""Every hook of fn-core: the reference documentation for plugin authors.

**Hooks are called synchronously, on the node's event loop: an impl must not block, and must be
quick.** While one runs, the node serves nothing else: a ``call_finished`` that sleeps 2 s (or
waits 2 s on a socket, a database, a lock) delays every request of the LB by 2 s. Keep per-call
work to memory (counters, a queue) and hand anything slow to a thread (a ``queue.Queue`` read by
a worker thread you start in `configure`) or to an asyncio task of your own. An impl must be a
plain ``def``: fn-core never awaits what a hook returns, so an ``async def`` impl would never run,
and start-up refuses it (`fn_core.errors.PluginError` naming the plugin and the hook).

A plugin is any module or object with functions marked ``@hookimpl`` (``from fn_core import
hookimpl``) whose names are the hooks below. An impl may take fewer arguments than the spec
(only the ones it needs), never others; a name that is no hook stops start-up, naming the plugin
and the closest hook name. Hooks run on the node kinds: the **LB** (takes HTTP invocations,
places calls), the **runner** (runs calls in containers) and the node that stores apps and fns
for the v2 API (`fn-core api`, or an LB with its own store); `fn-core serve` is all of them in
one process.

A plugin's name is its entry point's name (``cpu-shares = fn_cpu_shares`` in the ``fn_core.plugins``
group): its settings are the config file's ``[plugins.<that name>]`` table, an object it registers
is named ``<that name>:<what>``, and the placers, drivers and runner pools it offers need names of
their own (two plugins offering one name stop start-up). Do not reuse the names of the examples
below, nor those of the plugins in ``contrib/``.

A failure of a per-call hook is logged with the plugin's name: its traceback the first time a
(plugin, hook, exception type and line that raised it) fails, then one line at most every minute
with the count.

Where a hook lets a plugin refuse with `fn_core.APIError`, the error must be one: a status in
400..599 and a ``str`` message. Any other (a 200 would tell the client its request was done) is
taken as the plugin failing: a 500 naming the plugin, logged.

Unless a hook says otherwise, every registered impl runs, last registered first (pluggy's
LIFO order), and an exception raised by an impl stops the hook and propagates to the caller
described under *Errors*. Third-party plugins run before the built-ins: built-ins are registered
first, and the objects they register in `configure` are marked ``trylast``. An object you register
in `configure` runs before the plugins registered at start-up; ``@hookimpl(tryfirst=True)`` or
``trylast=True`` moves an impl to the front or the back. Where a hook says that every impl runs
and one that raises is only logged, that holds for plain impls: a wrapper
(``@hookimpl(wrapper=True)``) that raises ends the call of the impls it wraps.

The hooks, grouped by when they run:

* start-up: `configure`, `register_placers`, `register_drivers`, `register_runner_pools`
* each HTTP request to the LB or API node: `check_request`
* each call on the LB: `override_call`, `place_call`, `call_finished`
* each call on the runner: `runner_call_finished`
* each container on the runner: `modify_container_options`
* each app, fn or trigger saved through the v2 API: `validate_app`, `validate_fn`, `validate_trigger`; deleted:
  `validate_delete`; saved or deleted: `object_changed`
* status: `runner_status`
* each scrape of `/metrics`: `metric_families`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fn_core import hookspec

if TYPE_CHECKING:
    from fn_core.config import Config
    from fn_core.metrics import Family
    from fn_core.models import App, Call, Fn, Trigger
    from fn_core.plugins import FnPluginManager
    from fn_core.records import CallOutcome, Driver, HttpRequest, Placer, RunnerPool, RunnerRef, RunnerStatus


# --------------------------------------------------------------------------------------------
# start-up
# --------------------------------------------------------------------------------------------
@hookspec(historic=True)
def configure(config: Config, plugin_manager: FnPluginManager) -> None:
    """Give every plugin the platform's configuration, once, at start-up.

    When: right after the plugin manager is built and the placer and driver are selected,
    before any server starts; plugins registered later get it replayed on registration.
    Node: every node (LB, runner, all-in-one) and the `fn-core plugins` command.

    :param config: the validated `fn_core.config.Config`. A plugin's own settings are the
        config file's ``[plugins.<name>]`` table, ``<name>`` being the plugin's entry-point name:
        ``config.plugin_settings("<name>")`` returns it as a dict (empty when absent); with
        ``known=[...]``, the keys your plugin reads, any other key stops start-up naming it (a typo is
        then no silent default). A table under any other name is read by no plugin, and start-up warns
        that it "names no installed plugin".
    :param plugin_manager: the `fn_core.plugins.FnPluginManager` being built. A plugin that is
        only wanted under some setting registers its working object here (as pytest's plugins
        do in ``pytest_configure``): the object's hooks then run for this manager alone, with
        no state at module level. The built-in ``tracing`` does so when ``zipkin_url`` or ``jaeger_url`` is set.
    :return: ignored.

    Errors: raise `fn_core.errors.ConfigError` to stop start-up with your message (say which
    setting is wrong and what would be right); any other exception also stops start-up, with an
    error naming your plugin. Registering an object under a name another plugin's object has
    stops start-up naming both plugins: name yours ``<your entry-point name>:<what>``.

    Example::

        from fn_core import hookimpl
        from fn_core.errors import ConfigError

        # this plugin's entry point is ``cpu-weight-example = ...``: its table is [plugins.cpu-weight-example]
        # CpuWeight: your own class, holding the setting and implementing the hooks that use it

        @hookimpl
        def configure(config, plugin_manager):
            # settings live in the object this manager runs, never in a module global: two managers
            # in one process (tests do that) keep their own
            shares_per_mb = config.plugin_settings("cpu-weight-example").get("shares_per_mb", 0)
            if not isinstance(shares_per_mb, int) or shares_per_mb < 0:
                raise ConfigError(
                    f"[plugins.cpu-weight-example] shares_per_mb must be a whole number >= 0, got {shares_per_mb!r}"
                )
            if shares_per_mb:
                # named "<entry-point name>:<what>": `fn-core plugins` lists its hooks under this plugin
                plugin_manager.register(CpuWeight(shares_per_mb), name="cpu-weight-example:settings")
    """


@hookspec
def register_placers() -> list[Placer]:
    """Offer placement strategies, each under a name operators select it by.

    When: once, while the plugin manager is built. The platform collects every placer of
    every plugin, then activates the one named by the config (`placer`, `FN_PLACER`,
    `--placer`) by registering its ``hooks`` object, which implements `place_call`.
    Node: every node (the choice is validated even where no call is placed).

    :return: a list of `fn_core.Placer` records (or None to offer none).

    Errors: two placers with one name stop start-up with an error naming both plugins; a
    selected name nobody offers stops start-up listing the names that exist.

    Example::

        from fn_core import Placer, hookimpl

        class FirstRunner:
            @hookimpl
            def place_call(self, call, runners):
                return list(runners)

        @hookimpl
        def register_placers():
            return [Placer(name="first", hooks=FirstRunner(), description="always runner 1 first")]
    """


@hookspec
def register_drivers() -> list[Driver]:
    """Offer container drivers, each under a name operators select it by (`driver = "docker"`).

    When: once, while the plugin manager is built; the runner calls the selected driver's
    factory when it starts.
    Node: every node (validated everywhere, used on runners).

    :return: a list of `fn_core.Driver` records (or None).

    Errors: as `register_placers`: duplicate names and unknown selections stop start-up.

    Example::

        from fn_core import Driver, hookimpl
        from fn_plugins_builtin.driver_docker import DockerDriver  # the built-in Docker driver

        class LoggingDockerDriver(DockerDriver):
            pass  # the built-in Docker driver, and what this platform would add to it

        @hookimpl
        def register_drivers():
            # a name of its own: "docker" is the built-in driver's, and two plugins offering one name stop start-up
            return [Driver(name="docker-logging", factory=LoggingDockerDriver, description="Docker Engine, logged")]
    """


@hookspec
def register_runner_pools() -> list[RunnerPool]:
    """Offer sources of the LB's runner list (Fn's ``RunnerPool``), each under a name.

    When: once, while the plugin manager is built. The LB calls the selected pool's factory
    when it starts (`runner_pool = "static"`, `FN_RUNNER_POOL`, `--runner-pool`), awaits
    ``source.addresses()`` for the first list and, when the record says ``refresh=True``,
    asks again every ``runner_pool_refresh_ms``. A new address gets a channel and joins the
    list the placer sees; a vanished one leaves it at once, and its channel closes when its
    in-flight calls have ended (they are never cut or re-sent). A list with no runners, from a
    pool that had some, is taken for a transient read: the last list is kept, with a warning,
    until 5 such answers come in a row (the fifth drops it). The built-in ``static`` pool is
    `runner_addresses` (`FN_RUNNER_ADDRESSES`, `--runner`).
    Node: the LB (validated on every node).

    :return: a list of `fn_core.RunnerPool` records (or None). The factory reads its settings with
        ``config.plugin_settings("<your entry-point name>")``.

    The source's ``addresses()`` returns ``host:port`` strings in a stable order: placers
    such as ``ch`` hash over positions, so add new runners at the end. It runs on the event
    loop: do blocking work in a thread (``asyncio.to_thread``).

    Errors: as `register_placers` for names. A source whose ``addresses()`` raises or takes
    over 10 s keeps the last good list and is logged with its pool's name; invalid addresses
    are skipped with a warning. A ``refresh=False`` pool that fails at start stops the LB.

    Example::

        import asyncio
        from pathlib import Path

        from fn_core import RunnerPool, hookimpl

        # entry point ``hosts-list-example = ...``: the settings are [plugins.hosts-list-example]
        # (the table's name is the entry point's, or no plugin reads it), path = "/etc/fn/hosts"

        class FromFile:
            def __init__(self, config):
                self.path = config.plugin_settings("hosts-list-example")["path"]

            async def addresses(self):
                text = await asyncio.to_thread(Path(self.path).read_text)
                return text.split()

        @hookimpl
        def register_runner_pools():
            # selected by FN_RUNNER_POOL=hosts-list ("file" is contrib/fn-runner-file's pool)
            return [RunnerPool(name="hosts-list", factory=FromFile, description="one host:port per line")]
    """


# --------------------------------------------------------------------------------------------
# each HTTP request
# --------------------------------------------------------------------------------------------
@hookspec
def check_request(request: HttpRequest) -> None:
    """Refuse an HTTP request before fn-core handles it: authentication, authorization, quotas.

    When: for every request to the HTTP port of a node that serves the v2 API or invocations
    (`fn-core serve`, `fn-core lb`, `fn-core api`): ``/v2/...``, ``/invoke/...``, ``/t/...``,
    ``/metrics``, ``/``, ... before its route's handler runs, its body is read (an invoke's
    "100 Continue" is not sent yet) or its fn is looked up, so a refused client learns nothing
    of what exists. It runs on the event loop, for every call: it must not block, and must be
    quick (verify a token locally: a signature, a cache your plugin keeps fresh in a task of its
    own). Every impl runs, until one raises. Not called: on a runner's own HTTP port, for a CORS
    preflight from an allowed origin, to any route (``FN_API_CORS_ORIGINS``: answered before), and
    when no plugin implements it (nothing is then added to the request path).
    Node: the LB and the API node (and the all-in-one node).

    :param request: `fn_core.HttpRequest`: ``method``, ``path`` (as sent, percent-encoded),
        ``query``, ``headers`` (case-insensitive, read-only) and ``remote`` (the client's address).
    :return: ignored.

    Errors: raise `fn_core.APIError` to refuse the request: the client gets its status, its
    ``headers`` (``WWW-Authenticate`` on a 401, say) and ``{"message": ...}``; nothing else
    happens. A refused invoke or trigger request is logged and counted as a rejected invoke
    (``fn_lb_invoke_rejected_total``), with no call. Any other exception refuses it with 500
    ``"internal server error (plugin <name> failed)"``, logged with the plugin's name.

    Example::

        import hmac

        from fn_core import APIError, hookimpl

        TOKEN = "s3cret"  # yours: read it in configure, from your [plugins.<name>] table

        @hookimpl
        def check_request(request):
            if request.path == "/":  # the health check of a load balancer in front
                return
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given, f"Bearer {TOKEN}"):
                raise APIError("a valid bearer token is needed", status=401, headers={"WWW-Authenticate": "Bearer"})
    """


# --------------------------------------------------------------------------------------------
# each call
# --------------------------------------------------------------------------------------------
@hookspec
def override_call(call: Call, extensions: dict[str, str]) -> None:
    """Change a call, or reject it, before it is placed.

    When: once per call, after the call model has been built from the fn and the HTTP request
    (Fn's ``FromHTTPFnRequest``) and before the slot key is computed and the call is placed,
    on the LB's event loop: it must not block (every request of the LB waits while it runs).
    All impls run and compose: each sees the changes of those that ran before it.
    Node: the LB (and the all-in-one node).

    :param call: the mutable `fn_core.Call` (Fn's ``models.Call`` field names: ``id, app_id,
        app_name, fn_id, image, memory, timeout, idle_timeout, tmpfs_size, cpus, config,
        annotations, headers, method, url, type``, ...). Changing ``memory``, ``config``, ...
        changes what the container is started with (and so its slot key).
    :param extensions: mutable ``dict[str, str]`` sent to the runner in
        ``TryCall.extensions``; `modify_container_options` sees it there. Keys should be
        namespaced by your plugin (e.g. ``"fn-cpu-shares/shares"``). They are part of the
        slot key: calls whose extensions differ never share a container (set per-call values,
        such as a request id, as headers instead, or every call gets a cold container).
    :return: ignored; change ``call`` and ``extensions`` in place. Each call has its own
        ``config``, ``annotations`` and ``headers``, nested values included: change them freely.

    Errors: raise `fn_core.APIError` (status, message) to reject the call: the client gets that
    status and ``{"message": ...}``, nothing runs. Any other exception fails the call with 500
    ``{"message": "internal server error (plugin <name> failed)"}`` and is logged with the plugin's name.
    So does a value of the wrong type put into the call or the extensions (``extensions[k] = 5``,
    ``call.memory = "lots"``: each field keeps its type in `fn_core.models.Call`, extensions are
    ``str`` -> ``str``): the log line says which field has which type, and names the plugins that
    implement `override_call` (which of them set it cannot be told).

    Example::

        from fn_core import APIError, hookimpl

        @hookimpl
        def override_call(call, extensions):
            shares = call.annotations.get("example.com/cpu-shares")
            if shares is not None:
                if not isinstance(shares, int) or not 2 <= shares <= 262144:
                    raise APIError("cpu-shares must be an integer in 2..262144", status=400)
                extensions["example.com/cpu-shares"] = str(shares)
    """


@hookspec(firstresult=True)
def place_call(call: Call, runners: list[RunnerRef]) -> list[RunnerRef]:
    """Order the runners a call should be tried on: the placement strategy.

    Only the selected placer's impl is registered (see `register_placers`), so exactly one
    answers; wrappers (``@hookimpl(wrapper=True)``) may observe or adjust its answer. Any other
    plugin implementing it stops start-up with a `PluginError` naming that plugin.
    The core then tries the runners in the returned order: a runner that refuses (NACK: 503
    before anything ran) or cannot be reached is skipped and the next one is tried; after the
    whole list it waits ``retry_all_delay_ms`` (10 ms) and calls `place_call` again, until the
    client goes away or ``placer_timeout_s`` passes (``detached_placer_timeout_s`` for a detached call). A call that a runner has started is never
    sent to another runner.

    When: once per placement pass of each call, after `override_call`, on the LB's event loop:
    it must not block (every request of the LB waits while it runs).
    Node: the LB.

    :param call: the call (read it; do not change it here: it has been sent already on a retry).
    :param runners: the runner pool's runners, in its order (in-process runners first), as `fn_core.records.RunnerRef`
        (``address``, and ``status``: the last polled `RunnerStatus` if the placer set
        ``wants_runner_status``, else None). Do not mutate the list.
    :return: the runners to try, in order: always a list, never None. Leave out runners you do
        not want tried in this pass; an empty list means "none now": the core waits and asks again.

    Errors: an exception fails the call with 500 and is logged: one raised by the selected
    placer as ``{"message": "internal server error (placer <placer> failed)"}``, naming the placer
    and its plugin in the log; one raised by a wrapper as ``"internal server error (plugin <name>
    failed)"``, naming the wrapper's plugin. An answer that is not a list of the `RunnerRef` objects
    given (None, addresses, one ref, refs the placer made itself) fails the call as the placer's.

    Example::

        from fn_core import hookimpl

        class LeastBusy:
            @hookimpl
            def place_call(self, call, runners):  # failed runners last, then the least busy first
                return sorted(runners, key=lambda r: (r.status is not None and r.status.failed, r.status.active if r.status else 0))
    """


@hookspec
def call_finished(call: Call, outcome: CallOutcome) -> None:
    """Be told that a call has ended (Fn's ``CallListener.AfterCall``): logs, metrics, billing.

    When: once per call, after the response status is known, on the node that placed it, on its
    event loop: it must not block (every request of the LB waits while it runs: send what you
    record to a thread or a task of your own). Every impl runs; an impl that raises is logged with
    its name and the others still run. Each call `override_call` was run for ends here once: one
    an `override_call` refused or failed, one whose client went away, a detached call when its
    run ends (not at its 202). So a count taken in one and given back in the other stays right
    (``contrib/fn-concurrency-limit``); only calls under way when the process exits in the middle
    of its stop (a second signal) may go untold. A call whose client went away (``outcome.status``
    444) ends here at once, but its function may run on in its container until it returns (the
    runner lets it finish unseen), up to the call's ``timeout``: `runner_call_finished` hears of it
    then, with the container's time (the hook to bill a function's time by).
    Node: the LB (and the all-in-one node).

    :param call: the call as it was placed (after `override_call`).
    :param outcome: `fn_core.records.CallOutcome`: HTTP status, error message, runner address,
        number of placement attempts, duration, the request id (`FN_RID_HEADER`), and ``wait_s``, the
        part of the duration the call waited on its runner for a container (a cold start shows here;
        None when no runner said: not placed, or the runner was lost).
    :return: ignored.

    Errors: exceptions are logged and swallowed: a listener never changes the call's result. A
    listener that fails at every call logs its traceback once, then a line a minute with the count.

    Example::

        from fn_core import hookimpl

        # BILLING: your own collections.defaultdict(float)

        @hookimpl
        def call_finished(call, outcome):
            BILLING[call.app_id] += outcome.duration_s * call.memory
    """


@hookspec
def runner_call_finished(call: Call, outcome: CallOutcome) -> None:
    """Be told that a call this runner ran has ended: per-container accounting, tracing.

    When: once per call the runner took (not after a NACK, which the LB places elsewhere: a 503
    before the call's answer began, whoever raised it; nor for a call refused before anything
    ran: a try it cannot read, a body over its ``max_request_size``, the status image named as an
    fn's image), after Fn's ``finished`` message has gone to the LB: the LB's answer never waits
    for it; for a call the LB dropped before its end (its client went away), as it is dropped, or, when a
    container was already running it, once that container is done with it (the function runs on unseen to its
    end or its timeout, and the container then serves the next call): the time billed is the container's. It
    runs on the runner's event loop: it must not block (the runner's other calls wait while it
    runs). Every impl runs; an impl that raises is logged with its name and the others still run.
    Node: the runner (and the all-in-one node, where `call_finished` also runs for the call).

    :param call: the call as the LB sent it (its ``headers`` are the client's request headers).
    :param outcome: `fn_core.records.CallOutcome`: the status the LB was sent (the function's on
        success, 202 for a detached call that ran, the error's otherwise; 444 "Client cancelled
        context" for a dropped call, as Fn says of a client's cancel), the error message ("" on
        success), and ``duration_s`` from the call's arrival at the runner to its end, ``wait_s``
        the part of it spent waiting for a container (its launch, for a cold start; None for a
        call dropped before it had a container); ``runner``, ``attempts`` and ``request_id`` are empty here.
    :return: ignored.

    Errors: exceptions are logged and swallowed (the traceback once per plugin, exception
    type and line that raised it, then a line a minute with the count).

    Example::

        from fn_core import hookimpl

        # SECONDS_BY_APP: your own collections.defaultdict(float)

        @hookimpl
        def runner_call_finished(call, outcome):
            SECONDS_BY_APP[call.app_id] += outcome.duration_s
    """


# --------------------------------------------------------------------------------------------
# each container
# --------------------------------------------------------------------------------------------
@hookspec
def modify_container_options(call: Call, extensions: dict[str, str], options: dict[str, Any]) -> None:
    """Change how a container is created for a call's slot.

    When: each time the driver creates a container (a cold start), after it has filled the
    options and before it creates the container. Containers are reused for later calls of
    the same slot, so this runs once per container, not once per call; the slot key covers the
    call's extensions, so a container is only reused for calls with the same ones. It runs on the
    runner's event loop: it must not block (every call of the runner waits while it runs). All
    impls run and compose. When two set the same option, the one that runs later wins, with no
    warning: third-party plugins run before the built-ins, and among themselves in an order the
    platform does not fix (their entry points'), so a plugin whose value must win marks its impl
    ``@hookimpl(trylast=True)``; better, add to a value (``options["environment"]``) than replace it.
    Node: the runner.

    :param call: the call that caused the container to be created (as the LB sent it).
    :param extensions: the call's extensions (``TryCall.extensions``), read-only by contract.
    :param options: mutable dict of keyword arguments for the docker SDK's
        ``DockerClient.containers.create()``, already filled by the docker driver
        (``image, environment, labels, mem_limit, memswap_limit, cpu_quota, cpu_period,
        read_only, tmpfs, user, cap_drop, security_opt, pids_limit, ulimits, init, mounts,
        network_mode`` ...). Set e.g. ``options["cpu_shares"] = 512`` or add to
        ``options["environment"]``. Labels may be added or replaced, but those that mark the
        container as the runner's (``fn-agent-classifier``, ``fn-agent-instance``) are put back
        after every impl ran: a runner started after a crash finds its containers by them.
    :return: ignored; change ``options`` in place.

    Errors: raise `fn_core.APIError` to refuse the container (none is created). **A 503 is a
    refusal, not a failure**: by Fn's protocol a 503 before the call's result has started means
    "try another runner", so the LB tries the call on the next runner, and goes on trying (every
    ``retry_all_delay_ms`` once it has tried them all) until one takes it; if every runner keeps
    refusing, the client gets 503 ``{"message": "Timed out - server too busy"}`` after the
    placer timeout (``placer_timeout_s``, 360 s), and your hook has run once per try. Raise a
    503 only for "not here, maybe elsewhere". **Any other status fails the call at once**: the
    client gets it with your message (a 400 for a bad annotation, say). A refusal is logged with
    your plugin's name once per message, and again only after the hook has run clean. Any other
    exception fails the call with 500 ``"internal server error (plugin <name> failed)"``, logged
    with the plugin's name.

    Example::

        from fn_core import hookimpl

        @hookimpl
        def modify_container_options(extensions, options):
            if "example.com/cpu-shares" in extensions:
                options["cpu_shares"] = int(extensions["example.com/cpu-shares"])
    """


# --------------------------------------------------------------------------------------------
# each save of an app, fn or trigger
# --------------------------------------------------------------------------------------------
@hookspec
def validate_app(app: App) -> None:
    """Check an app before it is saved: refuse at deploy time what your plugin would refuse at every call.

    When: on ``POST /v2/apps`` and ``PUT /v2/apps/{app_id}``, after fn-core's own checks passed
    (Fn's names, limits and messages) and before the store is written, on the event loop: it must
    not block. Also for each app ``fn-core import-fn`` copies from Fn (an import any impl refuses
    writes nothing; the error names the object and the plugin). Every impl runs, until one raises.
    Apps saved before your plugin was installed, or before a setting of it changed, are not checked
    again: `override_call` still meets them; but their next update is checked whole, so it must fix
    all your plugin refuses in them at once.
    This node's updates of one app take turns (the hook sees each on the last one's result).
    Node: the node that stores apps and fns (`fn-core serve`, `fn-core api`, an `fn-core lb`
    without ``FN_RUNNER_API_URL``); install the plugin there too.

    :param app: the `fn_core.App` as it will be stored: on an update the stored app with the
        request's changes merged in (Fn's rules: a config key set to "" is removed). Its ``id`` is ""
        on a create (Fn's id and times on an import); its ``updated_at`` is the stored one (the store
        stamps the new time). It is a copy: what you change in it is not stored (change calls in
        `override_call`).
    :return: ignored.

    Errors: raise `fn_core.APIError` to refuse the save: the client gets its status (400 for bad
    input) and ``{"message": ...}``, and nothing is stored. Any other exception refuses it with
    500 ``"internal server error (plugin <name> failed)"``, logged with the plugin's name.

    Example::

        from fn_core import APIError, hookimpl

        @hookimpl
        def validate_app(app):
            if "example.com/team" not in app.annotations:
                raise APIError("an app needs the annotation example.com/team (who runs it)", status=400)
    """


@hookspec
def validate_fn(app: App, fn: Fn) -> None:
    """Check an fn before it is saved: a bad annotation is a 400 on the ``PUT``, not on every call.

    When: on ``POST /v2/fns`` and ``PUT /v2/fns/{fn_id}``, after fn-core's own checks passed and
    the fn's app was found, before the store is written, on the event loop: it must not block.
    Also for each fn ``fn-core import-fn`` copies (with the app it copies with it), as `validate_app`.
    Every impl runs, until one raises. Fns saved before, and an fn whose app's annotations change
    later, are not checked again: `override_call` still meets them (an fn's next update is checked
    whole). Updates of one fn take turns, as `validate_app`'s.
    Node: as `validate_app`.

    :param app: the fn's `fn_core.App`, as stored. A call's annotations are the app's with the fn's
        merged over them (`override_call` sees them so): check ``{**app.annotations, **fn.annotations}``
        to judge what calls will run with.
    :param fn: the `fn_core.Fn` as it will be stored (an update's changes merged in; ``id`` "" on a
        create). Both are copies: what you change in them is not stored.
    :return: ignored.

    Errors: as `validate_app`: an `fn_core.APIError` is the client's answer and nothing is stored.

    Example::

        from fn_core import APIError, hookimpl

        @hookimpl
        def validate_fn(app, fn):
            if not fn.image.startswith("registry.example.com/"):
                raise APIError(f"image {fn.image!r} is not from registry.example.com", status=400)
    """


@hookspec
def validate_trigger(app: App, fn: Fn, trigger: Trigger) -> None:
    """Check a trigger before it is saved: which paths an app may serve, and by which fns.

    When: on ``POST /v2/triggers`` and ``PUT /v2/triggers/{trigger_id}``, after fn-core's own checks
    passed and the trigger's app and fn were found (a fn of another app is fn-core's 400 first), before
    the store is written, on the event loop: it must not block. Also for each trigger ``fn-core
    import-fn`` copies, as `validate_app`. Every impl runs, until one raises. Triggers saved before
    are not checked again (a trigger's next update is checked whole). Updates of one trigger take
    turns, as `validate_app`'s.
    Node: as `validate_app`.

    :param app: the trigger's `fn_core.App`, as stored.
    :param fn: the `fn_core.Fn` it will call, as stored (an update may point the trigger at another fn:
        this is the new one).
    :param trigger: the `fn_core.Trigger` as it will be stored (an update's changes merged in; ``id`` ""
        on a create). ``source`` is the path under ``/t/<app name>``, beginning with "/". All three are
        copies: what you change in them is not stored.
    :return: ignored.

    Errors: as `validate_app`: an `fn_core.APIError` is the client's answer and nothing is stored.

    Example::

        from fn_core import APIError, hookimpl

        @hookimpl
        def validate_trigger(app, fn, trigger):
            if not trigger.source.startswith("/public/"):
                raise APIError(f"a trigger's source must begin with /public/, not {trigger.source!r}", status=400)
    """


@hookspec
def validate_delete(app: App, fn: Fn | None, trigger: Trigger | None) -> None:
    """Check a delete before it is done: keep what must not go (Fn's ``Before*Delete`` listeners).

    When: on ``DELETE /v2/apps/{app_id}``, ``/v2/fns/{fn_id}`` and ``/v2/triggers/{trigger_id}``, once the
    object was found (an unknown id is fn-core's 404 first), before the store is written, on the event
    loop: it must not block. What is deleted is the most specific one given: ``trigger`` when it is not
    None, else ``fn`` when it is not None, else ``app`` (an app's fns and triggers go with it). Every impl
    runs, until one raises. This node's deletes and checked updates of one object take turns; a write by
    another process that lands between the check and the delete is not seen. Also in ``fn-core import-fn
    --mirror``'s process, for each object it would delete (an app's fns and triggers each asked too), before
    it writes anything: one refused, and nothing is imported (the command lists each refusal and its plugin).
    Node: as `validate_app`.

    :param app: the `fn_core.App` that is deleted, or the app of the fn or trigger that is.
    :param fn: the `fn_core.Fn` that is deleted, or the fn of the trigger that is; None when an app is.
    :param trigger: the `fn_core.Trigger` that is deleted; None when an app or fn is. All three as stored,
        and copies.
    :return: ignored.

    Errors: raise `fn_core.APIError` to refuse the delete: the client gets its status (409 for "not in this
    state", 403 for "not you") and ``{"message": ...}``, and nothing is deleted. Any other exception refuses
    it with 500 ``"internal server error (plugin <name> failed)"``, logged with the plugin's name.

    Example::

        from fn_core import APIError, hookimpl

        @hookimpl
        def validate_delete(app, fn, trigger):
            if fn is None and "example.com/protected" in app.annotations:
                raise APIError(f"app {app.name} is protected: remove its annotation example.com/protected first", status=409)
    """


@hookspec
def object_changed(action: str, app: App, fn: Fn | None, trigger: Trigger | None) -> None:
    """Hear of each app, fn or trigger created, updated or deleted through the v2 API (Fn's ``After*`` listeners).

    Keep another system in step with what is stored: an audit log, a catalogue, a gateway's routes.

    When: once the store was written, before the client gets its answer (also when the client went away
    meanwhile: the write and this hook still run), on the event loop: it must not block (hand slow work to
    a task or a thread). What changed is the most specific one given, as in `validate_delete`; an app's
    delete is one change (its fns and triggers went with it). Every impl runs, whatever the others do.
    Not for writes that fail, nor for those made to the store by anything but this node's v2 API and
    ``fn-core import-fn`` (each object it created, updated, or deleted with ``--mirror``, each of those
    told apart; in that command's process, once the import's one transaction is written).
    Node: as `validate_app`.

    :param action: ``"created"``, ``"updated"`` (also an update that changed nothing) or ``"deleted"``.
    :param app: the `fn_core.App` that changed (as stored now; as it was, when deleted), or the app of the
        fn or trigger that did (as read just before the write).
    :param fn: the `fn_core.Fn` that changed, or the fn of the trigger that did; None for an app's change.
    :param trigger: the `fn_core.Trigger` that changed; None for an app's or fn's. All three are copies.
    :return: ignored.

    Errors: an exception is logged with the plugin's name (as `call_finished`'s) and changes nothing: the
    change is made and the client is told so; the other impls still run.

    Example::

        import logging

        from fn_core import hookimpl

        audit = logging.getLogger("example.audit")

        @hookimpl
        def object_changed(action, app, fn, trigger):
            what = trigger or fn or app
            audit.info("%s %s %s (%s) of app %s", action, type(what).__name__.lower(), what.name, what.id, app.name)
    """


# --------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------
@hookspec
def runner_status(status: RunnerStatus, runner: str | None) -> None:
    """Contribute to a runner's status (on the runner) or react to it (on the LB).

    When: on the event loop (it must not block), on the runner each time the ``Status`` RPC is
    served, after the live counters are filled in (``runner`` is None): add ``custom_status`` entries, or set ``failed`` /
    ``error_code`` / ``error_str`` when something the runner needs is broken (the built-in
    ``status-docker`` plugin does this when Docker does not answer). On the LB each time the
    runner pool has polled a runner's status (``runner`` is its address): read it, e.g. to feed
    a load-aware placer. The LB polls only when the selected placer asks for status
    (``Placer.wants_runner_status``); a poll the runner did not answer comes as a status with
    ``failed`` set and ``error_str`` saying why. Every impl runs (wrappers are not called); one
    that raises is logged with its name, its error is reported in
    ``custom_status["plugin-error:<name>"]``, and the others still run. On a runner
    with a status image (`FN_STATUS_IMAGE`) the image's call runs after the hooks, unless one of
    them set ``failed`` (as Fn skips it when its custom health checker fails).
    Node: runner (contribute) and LB (react).

    :param status: the mutable `fn_core.RunnerStatus` (``active``, ``failed``,
        ``requests_received``, ``requests_handled``, ``custom_status``, ...).
    :param runner: None on the runner itself; the runner's address on the LB.
    :return: ignored; change ``status`` in place (on the runner).

    Errors: isolated per impl, see above; a status plugin never takes the Status RPC down.

    Example::

        import shutil

        from fn_core import hookimpl

        @hookimpl
        def runner_status(status, runner):
            if runner is None:
                status.custom_status["disk-free-gb"] = str(shutil.disk_usage("/").free // 2**30)
    """


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
@hookspec
def metric_families() -> list[Family] | None:
    """Add your plugin's figures to the node's Prometheus `/metrics`.

    When: at every scrape of `/metrics`, on the event loop (keep it quick: return counters you
    keep, do no I/O). Every impl runs (wrappers are not called); one that raises, or answers other
    than a list of families, is logged with its name and the scrape goes on without its families.
    Each family is checked: its name (``[a-zA-Z_:][a-zA-Z0-9_:]*``, and none of the core's:
    ``fn_lb_*``, ``fn_runner_*``, ``fn_api_*``, ``fn_process_*``, a process collector's such as
    ``process_open_fds`` or ``<prefix>_process_cpu_seconds_total``, nor one another plugin gave), its
    type (counter, gauge, histogram, summary, untyped), its help (one line), and each sample line
    (``name{label="value",...} value [timestamp]``, the name the family's, or ``_bucket``,
    ``_sum``, ``_count`` of it for a histogram or summary, the value a float). A family that fails
    a check is left out, alone, and logged once with your plugin's name: one bad line would make
    a scraper drop the whole page.
    Node: every node with an HTTP port and plugins: the LB (and the all-in-one node, whose
    `/metrics` is its runner's too), the API node (`fn-core api`) and the runner (`fn-core runner`'s
    ``FN_PORT``).

    :return: a list of `fn_core.metrics.Family` tuples ``(name, type, help, sample lines)`` in the
        text exposition format (`fn_core.metrics.by_label` and `Histogram.samples` make the
        lines), or None. Prefix the names with your plugin's, as ``fn_trace_`` for tracing.

    Errors: isolated per impl, see above.

    Example::

        from fn_core import hookimpl
        from fn_core.metrics import Family  # for the annotation: a (name, type, help, sample lines) tuple

        # LINES: a counter your plugin keeps

        @hookimpl
        def metric_families() -> list[Family]:
            return [("audit_lines_total", "counter", "lines written to the audit log", [f"audit_lines_total {LINES}"])]
    """
