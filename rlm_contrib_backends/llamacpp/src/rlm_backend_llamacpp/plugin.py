"""Registers the ``llamacpp`` backend (alias ``local-model``) with rlm.

Importing this module is cheap on purpose: the factory is a ``"module:attribute"`` string, so
``xllamacpp``, ``openai`` and the weights are touched only when a run picks this backend.
"""

from __future__ import annotations

from rlm.plugin import hookimpl


@hookimpl
def rlm_register_backends(registrar):
    registrar.add(
        "llamacpp", "rlm_backend_llamacpp.backend:LlamaCppBackend", aliases=("local-model",),
        description="a GGUF model run by llama.cpp in this process, no key or network "
                    "(default: the bundled Qwen2.5-Coder-0.5B-Instruct Q4_K_M; model_path= for "
                    "your own)")
