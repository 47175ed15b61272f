// The Deno main thread of the 'pyodide' environment. It starts Pyodide in a Web Worker (which
// does all channel I/O itself, synchronously, over this process's stdin/stdout) and watches the
// cell deadline: Pyodide runs in a single thread, so stopping a busy cell needs a second thread
// that writes SIGINT into Pyodide's interrupt buffer. The same happens when the host sends this
// process SIGUSR1 (``PyodideREPL.interrupt()``: a cancelled run's cell). And it dies with its
// host: when the parent that started it is gone (killed outright, so it could not close the
// channel; a busy cell would never read the end of stdin), the process exits within 20 ms.
// Nothing else happens here.
//
// Deno.args: [pyodideDir, workerPy, bridgePy]. Started by rlm_env_pyodide.env with read access
// to those three paths only: no network, no writes, no environment, no subprocesses.

const [pyodideDir, workerPy, bridgePy] = Deno.args;

// Shared words: [0] interrupt buffer (Pyodide reads it), [1] lock, [2] fired flag, [3] cell state
// (0 idle, 1 running, 2 cancel requested, 3 cancelled and ended), then a Float64 deadline (epoch
// ms; 0 = no deadline) at byte 16.
const shared = new SharedArrayBuffer(24);
const words = new Int32Array(shared, 0, 4);
const deadline = new Float64Array(shared, 16, 1);
const INTERRUPT = 0, LOCK = 1, FIRED = 2, CELL = 3;
const RUNNING = 1, CANCEL = 2;
const SIGINT = 2;
const REPEAT_MS = 100; // a cell that swallows KeyboardInterrupt is interrupted again

const worker = new Worker(new URL("./pyodide_worker.mjs", import.meta.url).href, { type: "module" });
worker.onmessage = (event) => {
  const data = event.data || {};
  if (typeof data.exit === "number") {
    Deno.exit(data.exit);
  }
};
worker.onerror = (event) => {
  event.preventDefault();
  console.error(`rlm pyodide worker failed: ${event.message}`);
  Deno.exit(70);
};
worker.postMessage({ pyodideDir, workerPy, bridgePy, shared });

const host = Deno.ppid; // a different parent later means the host is gone (we were re-parented)
const HOST_GONE = 75;
let cancelRequested = false;
let nextKick = 0;
Deno.addSignalListener("SIGUSR1", () => {
  cancelRequested = true;
});

setInterval(() => {
  if (Deno.ppid !== host) Deno.exit(HOST_GONE);
  if (Atomics.compareExchange(words, LOCK, 0, 1) !== 0) return; // the worker holds it: next tick
  try {
    if (cancelRequested) {
      cancelRequested = false;
      if (Atomics.load(words, CELL) === RUNNING) Atomics.store(words, CELL, CANCEL);
    }
    if (Atomics.load(words, CELL) === CANCEL && Date.now() >= nextKick) {
      Atomics.store(words, INTERRUPT, SIGINT); // again every REPEAT_MS until the cell ends
      nextKick = Date.now() + REPEAT_MS;
    }
    const due = deadline[0];
    if (due > 0 && Date.now() >= due) {
      Atomics.store(words, FIRED, 1);
      Atomics.store(words, INTERRUPT, SIGINT);
      deadline[0] = Date.now() + REPEAT_MS;
    }
  } finally {
    Atomics.store(words, LOCK, 0);
  }
}, 20);
