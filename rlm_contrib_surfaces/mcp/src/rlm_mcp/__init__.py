"""``rlm mcp``: a Model Context Protocol server (stdio or streamable HTTP) whose tool
``rlm_answer`` answers a question over a context given as text, file paths or a glob.

    rlm mcp                                   # stdio, for an agent's MCP configuration
    rlm mcp --transport http --port 8765      # streamable HTTP at http://127.0.0.1:8765/mcp
"""

from .server import MCPSettings, build_server

__all__ = ["MCPSettings", "build_server"]
