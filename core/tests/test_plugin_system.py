"""The kernel's plugin system, in-process: registries, provenance, laziness, clashes, rollback,
validation, error messages, and the entry-point loader (with fake entry points)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
import uuid
import warnings
from importlib import metadata

import pytest
import rlm
from rlm import _loader
from rlm._hookspecs import HOOK_KINDS
from rlm._loader import RLMPluginWarning
from rlm._manager import PluginManager, get_plugin_manager, reset_plugin_manager
from rlm._registrar import PluginEntry, Registrar
from rlm.exceptions import ConfigurationError, PluginError, UnknownPluginError
from rlm.plugin import hookimpl

pytestmark = pytest.mark.usefixtures("clean_plugin_env")


def isolated(**kw) -> PluginManager:
    return PluginManager(load_entrypoints=False, **kw)


def plugin(**hooks) -> types.SimpleNamespace:
    """A plugin object whose attributes are the given hook implementations."""
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def adds(*items, then=None):
    """A hook body that calls ``registrar.add(*args, **kwargs)`` for each item, then ``then()``."""
    def hook(registrar):
        for args, kwargs in items:
            registrar.add(*args, **kwargs)
        if then is not None:
            then()
    return hook


def boom():
    raise RuntimeError("exploded half-way")


class Factory:
    def __init__(self, model_name: str = "m", *, temperature: float = 0.0):
        self.model_name = model_name
        self.temperature = temperature


# --- registries, provenance, laziness, aliases -------------------------------------------


ALL_HOOKS = {
    "backend": "rlm_register_backends",
    "environment": "rlm_register_environments",
    "tool_provider": "rlm_register_tool_providers",
    "compaction": "rlm_register_compaction_strategies",
    "sink": "rlm_register_logger_sinks",
    "command": "rlm_register_commands",
    "executor": "rlm_register_executors",
}


def test_hook_kinds_cover_the_six_hooks():
    assert HOOK_KINDS == ALL_HOOKS
    assert _loader.known_hooks() == sorted(ALL_HOOKS.values())


def test_each_kind_has_its_own_registry():
    hooks = {hook: adds(((f"{kind}-x", Factory), {})) for kind, hook in ALL_HOOKS.items()}
    pm = isolated()
    pm.register(plugin(**hooks), name="everything")
    for kind in ALL_HOOKS:
        reg = pm.registry(kind)
        assert isinstance(reg, Registrar)
        assert reg.kind == kind
        assert reg.names() == [f"{kind}-x"]
        assert pm.names(kind) == [f"{kind}-x"]
        assert pm.entry(kind, f"{kind}-x").kind == kind
    # the registry is cached until the set of plugins changes
    assert pm.registry("backend") is pm.registry("backend")
    pm.register(plugin(rlm_register_backends=adds((("second", Factory), {}))), name="p2")
    assert pm.names("backend") == ["backend-x", "second"]


def test_unknown_kind_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="unknown extension kind 'backends'.*backend"):
        isolated().registry("backends")


def test_provenance_records_who_registered_what():
    pm = isolated()
    pm.register(plugin(rlm_register_backends=adds((("alpha", Factory), {"description": "A"}))),
                name="plugin-a")
    pm.register(plugin(rlm_register_backends=adds((("beta", "json:dumps"), {})),
                       rlm_register_environments=adds((("env-b", Factory), {}))),
                name="plugin-b")
    alpha, beta = pm.entry("backend", "alpha"), pm.entry("backend", "beta")
    assert (alpha.plugin, alpha.description, alpha.distribution) == ("plugin-a", "A", None)
    assert beta.plugin == "plugin-b"
    assert pm.entry("environment", "env-b").plugin == "plugin-b"
    assert alpha.origin == "plugin 'plugin-a' (in-process)"
    assert beta.to_dict()["target"] == "json:dumps"
    rows = {row["name"]: row for row in pm.report()}
    assert rows["plugin-a"]["registered"] == {"backend": ["alpha"]}
    assert rows["plugin-b"]["registered"] == {"backend": ["beta"], "environment": ["env-b"]}
    assert rows["plugin-b"]["hooks"] == ["rlm_register_backends", "rlm_register_environments"]
    assert {row["status"] for row in rows.values()} == {"ok"}


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """A module on sys.path that has never been imported; removed from sys.modules afterwards."""
    name = f"rlm_lazy_probe_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        class ProbeBackend:
            def __init__(self, model_name="probe"):
                self.model_name = model_name
        NOT_CALLABLE = 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_string_factories_are_not_imported_until_load(probe_module):
    pm = isolated()
    target = f"{probe_module}:ProbeBackend"
    pm.register(plugin(rlm_register_backends=adds((("probe", target), {}))), name="lazy")
    entry = pm.entry("backend", "probe")
    pm.report()
    assert probe_module not in sys.modules
    assert entry.target_name == target and not entry.loaded
    factory = entry.load()
    assert probe_module in sys.modules
    assert entry.loaded and factory is sys.modules[probe_module].ProbeBackend
    assert entry.load() is factory
    backend = pm.create("backend", "probe", model_name="x")
    assert type(backend).__name__ == "ProbeBackend" and backend.model_name == "x"


def test_load_errors_name_the_plugin_and_the_target(probe_module):
    pm = isolated()
    pm.register(plugin(rlm_register_backends=adds(
        (("gone", "rlm_no_such_module_xyz.sub:Thing"), {}),
        (("noattr", f"{probe_module}:Missing"), {}),
        (("notcallable", f"{probe_module}:NOT_CALLABLE"), {}),
    )), name="fragile")
    with pytest.raises(PluginError, match=r"plugin 'fragile'.*rlm_no_such_module_xyz") as info:
        pm.entry("backend", "gone").load()
    assert info.value.plugin == "fragile"
    with pytest.raises(PluginError, match=r"has no attribute 'Missing'"):
        pm.entry("backend", "noattr").load()
    with pytest.raises(PluginError, match=r"int, not a callable factory"):
        pm.create("backend", "notcallable")


def test_missing_dependency_is_named_in_the_load_error(tmp_path, monkeypatch):
    name = f"rlm_needs_sdk_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import rlm_fake_provider_sdk_xyz\nclass B: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = PluginEntry("backend", "fake", f"{name}:B", "fakeplug", "rlm-backend-fake", "1.2")
    with pytest.raises(PluginError) as info:
        entry.load()
    msg = str(info.value)
    assert "rlm-backend-fake needs the module 'rlm_fake_provider_sdk_xyz'" in msg
    assert "pip install --upgrade rlm-backend-fake" in msg
    assert "RLM_DISABLE_PLUGINS=fakeplug" in msg
    assert info.value.distribution == "rlm-backend-fake"


def test_aliases_resolve_to_the_same_entry():
    pm = isolated()
    pm.register(plugin(rlm_register_backends=adds(
        (("openai-compatible", Factory), {"aliases": ("oai", "compat")}))), name="p")
    reg = pm.registry("backend")
    entry = pm.entry("backend", "oai")
    assert entry is pm.entry("backend", "compat") is pm.entry("backend", "openai-compatible")
    assert entry.name == "openai-compatible" and entry.aliases == ("oai", "compat")
    assert reg.names() == ["compat", "oai", "openai-compatible"]
    assert reg.primary_names() == ["openai-compatible"]
    assert isinstance(pm.create("backend", "oai", model_name="z"), Factory)


def test_options_are_kept_on_the_entry():
    pm = isolated()
    pm.register(plugin(rlm_register_tool_providers=adds(
        (("ctx", Factory), {"default": True}))), name="tools")
    entry = pm.entry("tool_provider", "ctx")
    assert entry.options == {"default": True}
    assert entry.to_dict()["options"] == {"default": True}


def test_hook_without_arguments_is_called():
    called = []
    pm = isolated()
    pm.register(plugin(rlm_register_commands=lambda: called.append(1)), name="noargs")
    assert pm.names("command") == [] and called == [1]


# --- conflicts ----------------------------------------------------------------------------


def _two_clashing():
    first = plugin(rlm_register_backends=adds((("dup", Factory), {})))
    second = plugin(rlm_register_backends=adds((("other", Factory), {"aliases": ("dup",)})))
    return first, second


def test_conflict_is_reported_naming_both_plugins():
    first, second = _two_clashing()
    pm = isolated()
    pm.register(first, name="first-plugin")
    pm.register(second, name="second-plugin")
    with pytest.warns(RLMPluginWarning) as record:
        entry = pm.entry("backend", "dup")
    assert entry.plugin == "second-plugin"  # the later registration wins
    [message] = [str(w.message) for w in record]
    assert "'dup'" in message and "first-plugin" in message and "second-plugin" in message
    assert pm.conflicts() == [message.removeprefix("rlm: ")]
    rows = {row["name"]: row for row in pm.report()}
    assert rows["first-plugin"]["conflicts"] == rows["second-plugin"]["conflicts"] == pm.conflicts()
    # reported once, not on every lookup
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pm.entry("backend", "dup")
        pm.report()


def test_conflict_raises_in_strict_mode():
    first, second = _two_clashing()
    pm = isolated(strict=True)
    pm.register(first, name="first-plugin")
    pm.register(second, name="second-plugin")
    with pytest.raises(PluginError, match=r"'dup'.*first-plugin.*second-plugin.*RLM_STRICT_PLUGINS"):
        pm.registry("backend")


def test_strict_mode_comes_from_the_environment(clean_plugin_env):
    clean_plugin_env.setenv("RLM_STRICT_PLUGINS", "1")
    assert isolated().strict is True
    clean_plugin_env.setenv("RLM_STRICT_PLUGINS", "0")
    assert isolated().strict is False


def test_same_plugin_registering_a_name_twice_is_an_error():
    reg = Registrar("backend")
    reg._begin("twice", None, None)
    reg.add("x", Factory)
    with pytest.raises(PluginError, match="'twice'.*registered the backend 'x' twice"):
        reg.add("x", Factory)
    with pytest.raises(PluginError, match="same name twice"):
        reg.add("y", Factory, aliases=("y",))


# --- rollback of a hook that raises ----------------------------------------------------------


def test_hook_that_raises_half_way_is_rolled_back_and_reported():
    good = plugin(rlm_register_backends=adds((("shared", Factory), {}), (("good-only", Factory), {})))
    bad = plugin(
        rlm_register_backends=adds((("bad-1", Factory), {}), (("bad-2", Factory), {}),
                                   (("shared", dict), {}), then=boom),
        rlm_register_environments=adds((("bad-env", Factory), {})),
    )
    pm = isolated()
    pm.register(good, name="good")
    pm.register(bad, name="bad")
    with pytest.warns(RLMPluginWarning, match=r"'bad'.*rlm_register_backends.*exploded half-way"):
        reg = pm.registry("backend")
    assert reg.names() == ["good-only", "shared"]
    assert pm.entry("backend", "shared").plugin == "good"  # the takeover is undone too
    assert reg.conflicts == []  # and so is the clash it caused
    [failure] = pm.failed
    assert (failure.name, failure.hook) == ("bad", "rlm_register_backends")
    assert "RuntimeError: exploded half-way" in failure.error
    assert "boom" in failure.traceback
    # its other hooks still work
    assert pm.names("environment") == ["bad-env"]
    row = {r["name"]: r for r in pm.report()}["bad"]
    assert row["status"] == "partial" and "exploded half-way" in row["error"]
    assert row["registered"] == {"environment": ["bad-env"]}
    # rebuilding the registry does not report it again
    pm.register(plugin(rlm_register_backends=adds((("late", Factory), {}))), name="late")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pm.names("backend") == ["good-only", "late", "shared"]
    assert len(pm.failed) == 1
    # unregistering the plugin forgets its failure
    pm.unregister("bad")
    assert pm.failed == [] and "bad" not in {r["name"] for r in pm.report()}


def test_hook_that_raises_is_fatal_in_strict_mode():
    pm = isolated(strict=True)
    pm.register(plugin(rlm_register_backends=adds((("x", Factory), {}), then=boom)), name="bad")
    with pytest.raises(PluginError, match=r"plugin 'bad'.*exploded half-way") as info:
        pm.registry("backend")
    assert info.value.plugin == "bad"


def test_wrapper_hookimpl_is_rejected():
    def wrapping(registrar):
        yield

    bad = types.SimpleNamespace(rlm_register_backends=hookimpl(wrapper=True)(wrapping))
    pm = isolated()
    pm.register(plugin(rlm_register_backends=adds((("ok", Factory), {}))), name="ok")
    pm.register(bad, name="wrapper")
    with pytest.warns(RLMPluginWarning, match="cannot be a wrapper"):
        assert pm.names("backend") == ["ok"]


# --- validation of names and factories ---------------------------------------------------


@pytest.mark.parametrize("bad_name", ["", "-leading", ".dot", "has space", "trailing\n", "é", 3, None])
def test_bad_names_raise_plugin_error_naming_the_plugin(bad_name):
    reg = Registrar("backend")
    reg._begin("namer", "rlm-backend-namer", "0.3")
    with pytest.raises(PluginError, match=r"'namer' \(distribution rlm-backend-namer 0.3\)") as info:
        reg.add(bad_name, Factory)
    assert (info.value.plugin, info.value.distribution) == ("namer", "rlm-backend-namer")
    with pytest.raises(PluginError, match="'namer'"):
        reg.add("fine", Factory, aliases=(bad_name,))
    assert reg.names() == []


@pytest.mark.parametrize("good_name", ["openai", "gpt-4o", "azure_openai", "org/model", "v1.2", "9lives"])
def test_good_names_are_accepted(good_name):
    reg = Registrar("backend")
    reg.add(good_name, Factory)
    assert good_name in reg


@pytest.mark.parametrize("bad_factory", [
    "nocolon", "pkg.mod:", ":Attr", "a:b:c", "pkg..mod:X", "pkg.mod.:X", "1pkg:X", "pkg:X.",
    "pkg.mod:X\n", "pkg mod:X", 42, b"pkg:X",
])
def test_bad_factories_raise_plugin_error_naming_the_plugin(bad_factory):
    reg = Registrar("backend")
    reg._begin("factoryman", None, None)
    with pytest.raises(PluginError, match=r"'factoryman'.*'ok'"):
        reg.add("ok", bad_factory)


def test_aliases_must_be_a_sequence_not_a_string():
    reg = Registrar("backend")
    reg._begin("aliaser", None, None)
    with pytest.raises(PluginError, match=r"'aliaser'.*aliases=\('oai',\)"):
        reg.add("openai", Factory, aliases="oai")


def test_bad_registration_through_the_manager_warns_or_raises():
    hook = adds((("fine", Factory), {}), (("bad name", Factory), {}))
    pm = isolated()
    pm.register(plugin(rlm_register_backends=hook), name="sloppy")
    with pytest.warns(RLMPluginWarning, match=r"'sloppy'.*'bad name'"):
        assert pm.names("backend") == []  # 'fine' was rolled back with the rest
    assert pm.failed[0].name == "sloppy" and "PluginError" in pm.failed[0].error

    strict = isolated(strict=True)
    strict.register(plugin(rlm_register_backends=hook), name="sloppy")
    with pytest.raises(PluginError, match=r"'sloppy'.*'bad name'") as info:
        strict.registry("backend")
    assert info.value.plugin == "sloppy"


# --- plugin validation at registration ------------------------------------------------------


def test_misspelled_hook_rejects_the_plugin():
    typo = plugin(rlm_register_backend=adds((("x", Factory), {})))
    pm = isolated()
    with pytest.raises(PluginError) as info:
        pm.register(typo, name="typo-plugin")
    msg = str(info.value)
    assert "'typo-plugin'" in msg and "unknown hook 'rlm_register_backend'" in msg
    assert "Did you mean 'rlm_register_backends'?" in msg
    for hook in ALL_HOOKS.values():
        assert hook in msg
    assert info.value.plugin == "typo-plugin"
    assert pm.pm.get_plugin("typo-plugin") is None
    assert "typo-plugin" not in {r["name"] for r in pm.report()}
    # a misspelled hook is allowed when marked optional
    optional = types.SimpleNamespace(
        rlm_register_backends=hookimpl(adds((("y", Factory), {}))),
        rlm_register_future_thing=hookimpl(optionalhook=True)(lambda registrar: None))
    pm.register(optional, name="forward-compatible")
    assert pm.names("backend") == ["y"]
    pm.check_pending()


def test_undecorated_hook_rejects_the_plugin():
    undecorated = types.SimpleNamespace(rlm_register_backends=lambda registrar: None)
    with pytest.raises(PluginError, match=r"rlm_register_backends.*not decorated with rlm's @hookimpl"):
        isolated().register(undecorated, name="forgot")


def test_plugin_without_hooks_is_rejected():
    with pytest.raises(PluginError, match="'empty' registers nothing"):
        isolated().register(types.SimpleNamespace(helper=lambda: None), name="empty")


def test_bad_hookimpl_signature_is_a_plugin_error():
    bad = plugin(rlm_register_backends=lambda reg: None)
    with pytest.raises(PluginError, match="registrar"):
        isolated().register(bad, name="wrong-arg")


def test_registering_the_same_name_twice_is_a_plugin_error():
    pm = isolated()
    pm.register(plugin(rlm_register_backends=adds()), name="p")
    with pytest.raises(PluginError, match="cannot register plugin 'p'"):
        pm.register(plugin(rlm_register_backends=adds()), name="p")


def test_check_pending_reports_plugins_registered_behind_our_back():
    pm = isolated()
    pm.pm.register(plugin(rlm_register_sinks=adds()), name="raw")
    known = r"rlm_register_sinks.*Known hooks are: .*rlm_register_logger_sinks"
    with pytest.raises(PluginError, match=known):
        pm.check_pending()


# --- unknown names and construction ------------------------------------------------------------


def test_unknown_backend_lists_installed_names_and_install_line():
    pm = isolated()
    pm.register(plugin(rlm_register_backends=adds((("scripted", Factory), {}),
                                                  (("openai", Factory), {}))), name="p")
    with pytest.raises(UnknownPluginError) as info:
        pm.entry("backend", "anthropic")
    err = info.value
    assert isinstance(err, ConfigurationError) and isinstance(err, LookupError)
    assert err.available == ["openai", "scripted"] and err.name == "anthropic"
    assert "Unknown backend 'anthropic'. Installed backends: openai, scripted." in str(err)
    assert "pip install rlm-backend-anthropic" in str(err)

    # A typo gets "did you mean", never a pip line for a name nobody vetted.
    with pytest.raises(UnknownPluginError, match=r"Did you mean 'scripted'\?") as typo:
        pm.entry("backend", "scriptd")
    assert "pip install" not in str(typo.value)
    with pytest.raises(UnknownPluginError, match="Installed compaction strategies: none"):
        pm.entry("compaction", "summary")
    with pytest.raises(UnknownPluginError, match="pip install rlm-env-docker"):
        pm.entry("environment", "docker")


def test_unknown_name_mentions_a_plugin_that_failed_to_load():
    pm = isolated()
    pm.failed.append(_loader.LoadFailure("anthropic", "rlm-backend-anthropic", "0.2", "x.plugin",
                                         "ImportError: boom"))
    with pytest.raises(UnknownPluginError, match=r"failed to load: ImportError: boom"):
        pm.entry("backend", "anthropic")


def test_create_turns_bad_keywords_into_configuration_error():
    def forwarding(**kwargs):
        return Factory(**kwargs)

    pm = isolated()
    pm.register(plugin(rlm_register_backends=adds((("strict-sig", Factory), {}),
                                                  (("forwarding", forwarding), {}))),
                name="maker")
    made = pm.create("backend", "strict-sig", model_name="gpt", temperature=0.5)
    assert (made.model_name, made.temperature) == ("gpt", 0.5)
    with pytest.raises(ConfigurationError) as info:
        pm.create("backend", "strict-sig", model_name="gpt", temprature=0.5)
    msg = str(info.value)
    assert "'strict-sig'" in msg and "plugin 'maker'" in msg and "temprature" in msg
    assert "model_name, temperature" in msg and "backend_kwargs" in msg
    assert isinstance(info.value.__cause__, TypeError) or info.value.__cause__ is None
    forwarded = r"'forwarding'.*plugin 'maker'.*unexpected keyword argument 'colour'"
    with pytest.raises(ConfigurationError, match=forwarded):
        pm.create("backend", "forwarding", colour="red")


def test_create_keeps_unrelated_type_errors():
    def buggy(model_name="m"):
        return len(5)  # a bug inside the factory, not a configuration problem

    pm = isolated()
    pm.register(plugin(rlm_register_backends=adds((("buggy", buggy), {}))), name="p")
    with pytest.raises(TypeError, match="has no len"):
        pm.create("backend", "buggy")


# --- tracing, process-wide manager, import cost -------------------------------------------


def test_trace_writes_hook_calls_to_stderr(capsys):
    pm = isolated(trace=True)
    pm.register(plugin(rlm_register_backends=adds((("x", Factory), {}))), name="traced")
    pm.registry("backend")
    assert "rlm-trace: rlm_register_backends -> traced" in capsys.readouterr().err


def test_get_plugin_manager_is_shared_until_reset(clean_plugin_env):
    clean_plugin_env.setenv("RLM_LOAD_PLUGINS", "")
    first = get_plugin_manager()
    assert get_plugin_manager() is first and rlm.get_plugin_manager() is first
    assert first.loaded == [] and first.failed == []
    reset_plugin_manager()
    assert get_plugin_manager() is not first


def test_listing_plugins_imports_no_provider_sdk():
    code = textwrap.dedent("""
        import sys, warnings, json
        warnings.simplefilter("ignore")
        import rlm
        assert "rlm._manager" not in sys.modules, "import rlm must not build the plugin manager"
        pm = rlm.PluginManager()
        pm.report()
        heavy = sorted(m for m in ("openai", "anthropic", "litellm", "docker", "modal", "e2b")
                       if m in sys.modules)
        print(json.dumps(heavy))
    """)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RLM_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- the entry-point loader, with fake entry points --------------------------------------------


class FakeDist:
    def __init__(self, name: str, version: str):
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    group = "rlm"

    def __init__(self, name: str, value: str, dist: FakeDist | None, loader):
        self.name, self.value, self.dist, self._loader = name, value, dist, loader
        self.load_calls = 0

    def load(self):
        self.load_calls += 1
        return self._loader()


@pytest.fixture
def fake_entry_points(monkeypatch):
    eps: list[FakeEntryPoint] = []

    def entry_points(*, group):
        assert group == "rlm"
        return list(eps)

    monkeypatch.setattr(metadata, "entry_points", entry_points)

    def add(name, loader, dist="rlm-backend-" + "fake", version="1.0", value=None):
        ep = FakeEntryPoint(name, value or f"{name.replace('-', '_')}.plugin",
                            FakeDist(dist, version) if dist else None, loader)
        eps.append(ep)
        return ep

    return add


def _fails_to_import():
    raise ImportError("cannot import name 'Client' from 'provider_sdk'")


def test_loader_isolates_failures_and_names_the_distribution(fake_entry_points):
    good = fake_entry_points("good", lambda: plugin(rlm_register_backends=adds((("g", Factory), {}))),
                             dist="rlm-backend-good", version="2.0")
    fake_entry_points("broken", _fails_to_import, dist="rlm-backend-broken", version="0.9")
    fake_entry_points("typo", lambda: plugin(rlm_register_backend=adds()), dist="rlm-backend-typo")
    with pytest.warns(RLMPluginWarning) as record:
        pm = PluginManager()
    messages = [str(w.message) for w in record if issubclass(w.category, RLMPluginWarning)]
    assert len(messages) == 2
    broken_msg = next(m for m in messages if "'broken'" in m)
    assert "distribution rlm-backend-broken 0.9" in broken_msg
    assert "cannot import name 'Client'" in broken_msg
    assert "pip uninstall rlm-backend-broken" in broken_msg
    assert "RLM_DISABLE_PLUGINS=broken" in broken_msg
    typo_msg = next(m for m in messages if "'typo'" in m)
    assert "rlm_register_backend'" in typo_msg and "rlm_register_backends" in typo_msg
    assert [p.name for p in pm.loaded] == ["good"]
    assert pm.loaded[0].distribution == "rlm-backend-good" and pm.loaded[0].version == "2.0"
    assert {f.name for f in pm.failed} == {"broken", "typo"}
    assert pm.pm.get_plugin("typo") is None  # rolled back
    assert pm.entry("backend", "g").distribution == "rlm-backend-good"
    assert pm.entry("backend", "g").origin == "plugin 'good' (distribution rlm-backend-good 2.0)"
    rows = {r["name"]: r for r in pm.report()}
    assert rows["broken"]["status"] == "failed" and rows["good"]["status"] == "ok"
    assert good.load_calls == 1


def test_loader_strict_mode_raises(fake_entry_points, clean_plugin_env):
    fake_entry_points("broken", _fails_to_import, dist="rlm-backend-broken")
    clean_plugin_env.setenv("RLM_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="rlm-backend-broken") as info:
        PluginManager()
    assert info.value.distribution == "rlm-backend-broken" and info.value.plugin == "broken"


@pytest.mark.parametrize("selector", ["broken", "rlm-backend-broken", "RLM_Backend_Broken",
                                      "rlm-backend-broken:broken", " other , broken "])
def test_disabled_plugins_are_never_loaded(fake_entry_points, clean_plugin_env, selector):
    broken = fake_entry_points("broken", _fails_to_import, dist="rlm-backend-broken")
    fake_entry_points("good", lambda: plugin(rlm_register_backends=adds((("g", Factory), {}))),
                      dist="rlm-backend-good")
    clean_plugin_env.setenv("RLM_DISABLE_PLUGINS", selector)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pm = PluginManager()
    assert broken.load_calls == 0
    assert pm.skipped == ["broken"] and [p.name for p in pm.loaded] == ["good"]


def test_allow_list_and_empty_allow_list(fake_entry_points, clean_plugin_env):
    a = fake_entry_points("a", lambda: plugin(rlm_register_backends=adds((("a", Factory), {}))),
                          dist="rlm-backend-a")
    b = fake_entry_points("b", lambda: plugin(rlm_register_backends=adds((("b", Factory), {}))),
                          dist="rlm-backend-b")
    clean_plugin_env.setenv("RLM_LOAD_PLUGINS", "rlm_backend_b")
    pm = PluginManager()
    assert [p.name for p in pm.loaded] == ["b"] and pm.skipped == ["a"] and a.load_calls == 0
    clean_plugin_env.setenv("RLM_LOAD_PLUGINS", "")
    pm = PluginManager()
    assert pm.loaded == [] and sorted(pm.skipped) == ["a", "b"] and b.load_calls == 1
    with pytest.raises(UnknownPluginError, match="installed but disabled: a: not in RLM_LOAD_PLUGINS"):
        pm.entry("backend", "a")


def test_trace_env_prints_load_lines(fake_entry_points, clean_plugin_env, capsys):
    fake_entry_points("good", lambda: plugin(rlm_register_backends=adds()), dist="rlm-backend-good")
    fake_entry_points("off", _fails_to_import, dist="rlm-backend-off")
    clean_plugin_env.setenv("RLM_TRACE_PLUGINS", "1")
    clean_plugin_env.setenv("RLM_DISABLE_PLUGINS", "off")
    pm = PluginManager()
    assert pm.trace is True
    err = capsys.readouterr().err
    assert "rlm: loaded plugin good (distribution rlm-backend-good 1.0) from good.plugin in" in err
    assert "rlm: skipped plugin off (distribution rlm-backend-off 1.0): listed in RLM_DISABLE_PLUGINS" in err


def test_entry_points_order_and_dedupe(fake_entry_points):
    fake_entry_points("zeta", lambda: None, dist="aaa-third-party")
    fake_entry_points("local", lambda: None, dist="rlm-plugins")
    fake_entry_points("local", lambda: None, dist="rlm_plugins")  # same dist seen twice on sys.path
    fake_entry_points("alpha", lambda: None, dist="zzz-third-party")
    names = [(ep.dist.metadata["Name"], ep.name) for ep in _loader.iter_entry_points()]
    assert names == [("rlm-plugins", "local"), ("aaa-third-party", "zeta"),
                     ("zzz-third-party", "alpha")]


def test_third_party_overrides_first_party_and_the_clash_is_reported(fake_entry_points):
    fake_entry_points("x", lambda: plugin(rlm_register_backends=adds((("openai", dict), {}))),
                      dist="rlm-backend-x")
    fake_entry_points("builtin", lambda: plugin(rlm_register_backends=adds((("openai", Factory), {}))),
                      dist="rlm-plugins")
    pm = PluginManager()
    both = r"plugin 'builtin' .*plugin 'x' .*RLM_DISABLE_PLUGINS=builtin or RLM_DISABLE_PLUGINS=x"
    with pytest.warns(RLMPluginWarning, match=both):
        assert pm.entry("backend", "openai").plugin == "x"


def test_same_entry_point_name_in_two_distributions_gets_distinct_names(fake_entry_points):
    fake_entry_points("plug", lambda: plugin(rlm_register_backends=adds((("one", Factory), {}))),
                      dist="dist-one")
    fake_entry_points("plug", lambda: plugin(rlm_register_backends=adds((("two", Factory), {}))),
                      dist="dist-two")
    pm = PluginManager()
    assert [p.name for p in pm.loaded] == ["plug", "dist-two:plug"]
    assert pm.entry("backend", "two").plugin == "dist-two:plug"


def test_disabled_plugins_are_listed_with_the_way_to_enable_them(tmp_path):
    """`rlm plugins` shows a plugin kept out by RLM_DISABLE_PLUGINS, and asking for its backend
    says how to enable it, not how to install it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "RLM_DISABLE_PLUGINS": "vllm", "RLM_USER_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "rlm", "plugins"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0
    [line] = [ln for ln in out.stdout.splitlines() if ln.startswith("vllm ")]
    assert "DISABLED" in line and "remove vllm from it to enable" in line
    run = subprocess.run([sys.executable, "-m", "rlm", "-b", "vllm", "hi"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 2
    assert "disabled" in run.stderr and "RLM_DISABLE_PLUGINS" in run.stderr
    assert "pip install" not in run.stderr


def test_strict_mode_stops_with_one_line_that_does_not_say_skipped(tmp_path):
    """RLM_STRICT_PLUGINS: a plugin that fails at import ends `rlm plugins` with exit 1 and one
    line naming the plugin, its distribution, strict mode and the fix, with no traceback."""
    import os
    import subprocess
    import sys

    pkg = tmp_path / "site" / "brokenprobe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('boom at import')\n")
    dist = tmp_path / "site" / "rlm_broken_probe-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rlm-broken-probe\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rlm]\nbroken = brokenprobe\n")
    env = {**os.environ, "RLM_STRICT_PLUGINS": "1", "RLM_USER_DIR": str(tmp_path),
           "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-m", "rlm", "plugins"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert "'broken'" in line and "rlm-broken-probe" in line and "RLM_STRICT_PLUGINS" in line
    assert "skipped" not in line and "Traceback" not in out.stderr
