"""rlm environment 'pyodide': the REPL in CPython compiled to WebAssembly, under Deno."""
