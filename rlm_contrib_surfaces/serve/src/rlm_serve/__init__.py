"""``rlm serve``: RLM profiles as an OpenAI-compatible HTTP API (``/v1/models``,
``/v1/chat/completions``, streamed and not) on Starlette and uvicorn.

    rlm serve --backend openai --model gpt-4o-mini            # http://127.0.0.1:8000/v1
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="default", messages=[...])

See :mod:`rlm_serve.app` for the wire behaviour and :mod:`rlm_serve.requests` for how a request
becomes context and question.
"""

from .app import App, ServeSettings, create_app
from .runner import BackgroundServer

__all__ = ["App", "BackgroundServer", "ServeSettings", "create_app"]
