"""The REPL process of `subrepl`. Standard library only: it never imports rlm.

It speaks JSON lines with the host (environment.py): commands arrive on stdin
(init, context, history, exec, reply, exit); results and helper calls leave on the
original stdout. A cell's own prints go to buffers, never to the channel.
"""

import io
import itertools
import json
import os
import signal
import sys
import threading
import time
import traceback

HELPERS = ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched")


class Channel:
    def __init__(self):
        # Keep private copies of fds 0 and 1 for the protocol, then point 0 at /dev/null and
        # 1 at stderr: a cell that reads stdin or writes to fd 1 cannot corrupt the channel.
        self.inp = os.fdopen(os.dup(0), "rb")
        self.out = os.fdopen(os.dup(1), "w", encoding="utf-8")
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(2, 1)
        sys.stdin = open(os.devnull)
        self.lock = threading.Lock()
        self.waiting = {}  # call id -> [threading.Event, reply]
        self.ids = itertools.count(1)
        self.commands = []
        self.command_ready = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def send(self, message):
        line = json.dumps(message, default=repr) + "\n"
        with self.lock:
            self.out.write(line)
            self.out.flush()

    def _read(self):
        for line in self.inp:
            message = json.loads(line)
            if message["op"] == "reply":  # the answer to a helper call: wake its caller
                slot = self.waiting.pop(message["id"])
                slot[1] = message["value"]
                slot[0].set()
            else:
                with self.command_ready:
                    self.commands.append(message)
                    self.command_ready.notify()
        # The host went away (it exited, or was killed): nothing is left to answer, so the REPL
        # ends now, even in the middle of a cell that never returns.
        os._exit(0)

    def next_command(self):
        with self.command_ready:
            while not self.commands:
                self.command_ready.wait()
            return self.commands.pop(0)

    def call(self, method, argument, model):
        """One helper call, from any thread of a cell: many may be in flight at once."""
        call_id = next(self.ids)
        slot = [threading.Event(), None]
        self.waiting[call_id] = slot
        self.send({"op": "call", "id": call_id, "method": method, "argument": argument,
                   "model": model})
        slot[0].wait()
        return slot[1]


class REPL:
    def __init__(self, channel, max_output_chars):
        self.channel = channel
        self.max_output_chars = max_output_chars
        self.answer = {"content": "", "ready": False}
        self.final = None
        self.reserved = {}  # name -> the value it gets back after every cell
        self.tools = {}
        self.contexts = {}
        self.histories = {}
        self.running = False
        self.builtins = dict(__builtins__ if isinstance(__builtins__, dict) else vars(__builtins__))
        self.builtins["input"] = self._input
        self.ns = {"__name__": "__main__", "__builtins__": self.builtins}
        for name in HELPERS:
            self.reserved[name] = self._helper(name)
        self.reserved.update(FINAL=self._final, FINAL_VAR=self._final_var,
                             SHOW_VARS=self._show_vars)
        self._restore()

    # -- the names the model's code sees -------------------------------------------------
    def _helper(self, method):
        def helper(prompt, model=None):
            if method.endswith("_batched"):
                prompt = list(prompt)
            return self.channel.call(method, prompt, model)
        helper.__name__ = method
        return helper

    def _final(self, value):
        self.final = str(value)
        return self.final

    def _final_var(self, name):
        name = str(name).strip().strip("'\"")
        if name not in self.ns:
            print(f"Error: Variable '{name}' not found. Available: {', '.join(self.variables())}")
            return None
        return self._final(self.ns[name])

    def _show_vars(self):
        names = self.variables()
        if not names:
            print("No variables yet.")
        for name in names:
            print(f"{name}: {type(self.ns[name]).__name__}")

    @staticmethod
    def _input(prompt=""):
        raise RuntimeError("input() is not available in the REPL: no one is there to type. "
                           "Put the data in a variable instead.")

    def variables(self):
        hidden = set(self.reserved) | {"context", "history", "answer"}
        return [n for n, v in self.ns.items()
                if not n.startswith("_") and n not in hidden and n not in self.tools
                and not _indexed(n) and type(v).__name__ != "module"]

    def _restore(self):
        self.ns.update(self.reserved)
        self.ns.update(self.tools)
        for i, value in self.contexts.items():
            self.ns[f"context_{i}"] = value
        for i, value in self.histories.items():
            self.ns[f"history_{i}"] = value
        if 0 in self.contexts:
            self.ns["context"] = self.contexts[0]
        if self.histories:
            self.ns["history"] = self.histories[max(self.histories)]
        current = self.ns.get("answer")
        if isinstance(current, dict) and current is not self.answer:
            self.answer.update(current)  # `answer = {...}` counts as setting the answer
        self.ns["answer"] = self.answer

    # -- commands --------------------------------------------------------------------------
    def init(self, tools, setup_code):
        for name, spec in tools.items():
            if "code" in spec:
                scope = {"__builtins__": self.builtins}
                exec(compile(spec["code"], f"<tool {name}>", "exec"), scope)
                self.tools[name] = scope[name]
            else:
                self.tools[name] = spec["value"]
        self._restore()
        if setup_code:
            result = self.execute(setup_code)
            return result["error"]
        return None

    def add_context(self, index, value):
        self.contexts[index] = value
        if index == 0:  # a new task: a fresh answer
            self.answer.clear()
            self.answer.update(content="", ready=False)
        self._restore()

    def add_history(self, index, value):
        self.histories[index] = value
        self._restore()

    def execute(self, code):
        out, err = io.StringIO(), io.StringIO()
        self.final = None
        error = None
        started = time.perf_counter()
        sys.stdout, sys.stderr = out, err
        try:
            compiled = compile(code, "<cell>", "exec")
            self.running = True
            try:
                exec(compiled, self.ns)
            finally:
                self.running = False
        except KeyboardInterrupt:
            error = "KeyboardInterrupt"
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: it ends the cell, not the REPL
            tb = exc.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
                tb = tb.tb_next  # drop this file's own frames from the traceback
            if isinstance(exc, SyntaxError) or tb is None:
                error = "".join(traceback.format_exception_only(type(exc), exc))
            else:
                error = "".join(traceback.format_exception(type(exc), exc, tb))
            err.write(error)
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        self._restore()
        content = self.answer.get("content")
        final = self.final
        if final is None and self.answer.get("ready"):
            final = "" if content is None else str(content)
        return {"stdout": self._cut(out.getvalue()), "stderr": self._cut(err.getvalue()),
                "error": error, "variables": self.variables(),
                "execution_time": time.perf_counter() - started, "final_answer": final,
                "answer_content": None if content in (None, "") else str(content)}

    def _cut(self, text):
        """Keep the start and the end of a long output, and say how much was left out."""
        if len(text) <= self.max_output_chars:
            return text
        half = self.max_output_chars // 2
        return (text[:half] + f"\n... [{len(text) - 2 * half:,} characters truncated] ...\n"
                + text[-half:])


def _indexed(name):
    base, _, number = name.partition("_")
    return base in ("context", "history") and number.isdigit()


def main():
    channel = Channel()
    repl = None

    def interrupt(signum, frame):  # the host's per-cell timeout: stop the cell, only a cell
        if repl is not None and repl.running:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    while True:
        command = channel.next_command()
        op = command["op"]
        if op == "exit":
            return
        if op == "init":
            repl = REPL(channel, command["max_output_chars"])
            channel.send({"op": "ready", "error": repl.init(command["tools"],
                                                             command["setup_code"])})
        elif op == "context":
            repl.add_context(command["index"], command["value"])
        elif op == "history":
            repl.add_history(command["index"], command["value"])
        elif op == "exec":
            channel.send({"op": "result", **repl.execute(command["code"])})


if __name__ == "__main__":
    main()
