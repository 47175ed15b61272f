"""Registers the correct and broken implementations of broken_impl under separate names."""

from rlm.plugin import hookimpl

BACKENDS = ("Good", "SwappedUsage", "DropsSampling", "WrapsErrors", "IgnoresTimeout", "SharedState",
            "BlocksLoop")
HTTP_BACKENDS = ("GoodHttp", "NoModel", "NoKey", "LeaksConnections", "DropsFinishReason",
                 "HidesErrorMessage", "NeverRetries", "ShowsKey")
ENVIRONMENTS = ("ZeroTime", "ShowsEverything", "ClaimsIsolation", "LeavesSidecar")


@hookimpl
def rlm_register_backends(registrar):
    for name in BACKENDS:
        registrar.add(name.lower(), f"broken_impl:{name}Backend", description=f"{name} backend")
    for name in HTTP_BACKENDS:
        registrar.add(name.lower(), f"broken_http:{name}Backend", description=f"{name} backend")


@hookimpl
def rlm_register_environments(registrar):
    for name in ENVIRONMENTS:
        registrar.add(name.lower(), f"broken_envs:{name}REPL", description=f"{name} REPL")


@hookimpl
def rlm_register_logger_sinks(registrar):
    registrar.add("good", "broken_impl:GoodSink", description="a correct sink")
    registrar.add("raises", "broken_impl:RaisesOnCompactedSink", description="raises on compacted")


@hookimpl
def rlm_register_compaction_strategies(registrar):
    registrar.add("mutating", "broken_impl:MutatingCompaction", description="mutates its input")


@hookimpl
def rlm_register_tool_providers(registrar):
    registrar.add("good", "broken_impl:GoodTools", description="a correct provider")
    registrar.add("reserved", "broken_impl:ReservedNameTools", description="uses a reserved name")
