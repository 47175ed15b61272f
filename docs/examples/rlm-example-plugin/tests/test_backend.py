"""minichat passes the conformance kit: every standard backend test, against the kit's
OpenAI-compatible server on 127.0.0.1 (the kit scripts its replies, usage and faults)."""

from rlm_testkit import OpenAICompatibleBackendTests


class TestMiniChat(OpenAICompatibleBackendTests):
    plugin = "rlm_example.plugin"          # the module the `rlm` entry point names
    backend_name = "minichat"              # the name it registers
    backend_kwargs = {"model_name": "tiny-1"}
    capabilities = {"cost": True}          # it reads usage.cost when the server sends one
