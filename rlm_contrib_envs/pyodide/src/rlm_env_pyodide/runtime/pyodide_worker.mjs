// The Web Worker that hosts Pyodide (see runner.mjs). It gives Python a small synchronous
// module, _rlm_io: whole frames in and out of stdin/stdout (never split by an interrupt), and
// the cell deadline shared with the main thread.

const MAX_FRAME = 64 * 1024 * 1024;
const INTERRUPT = 0, LOCK = 1, FIRED = 2, CELL = 3;

function readExact(n) {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const k = Deno.stdin.readSync(out.subarray(got));
    if (k === null || k === 0) {
      if (got === 0) return null;
      throw new Error("the channel closed in the middle of a frame");
    }
    got += k;
  }
  return out;
}

function writeAll(data) {
  let view = data;
  while (view.length) {
    view = view.subarray(Deno.stdout.writeSync(view));
  }
}

self.onmessage = async (event) => {
  const { pyodideDir, workerPy, bridgePy, shared } = event.data;
  const words = new Int32Array(shared, 0, 4);
  const deadline = new Float64Array(shared, 16, 1);
  const lock = () => {
    while (Atomics.compareExchange(words, LOCK, 0, 1) !== 0) Atomics.wait(words, LOCK, 1, 1);
  };
  const unlock = () => Atomics.store(words, LOCK, 0);
  let code = 0;
  try {
    const dir = pyodideDir.endsWith("/") ? pyodideDir : pyodideDir + "/";
    const { loadPyodide } = await import(new URL("pyodide.mjs", "file://" + dir).href);
    const pyodide = await loadPyodide({
      indexURL: dir,
      env: { HOME: "/home/pyodide" },
      // stdout is the channel: anything Python prints before the worker captures its output
      // goes to stderr, which the host keeps as the worker's log.
      stdout: (line) => console.error(line),
      stderr: (line) => console.error(line),
    });
    pyodide.setInterruptBuffer(words.subarray(INTERRUPT, INTERRUPT + 1));
    pyodide.registerJsModule("_rlm_io", {
      // [kind, payload] of the next frame, null at the end of the stream.
      read_frame() {
        const header = readExact(5);
        if (header === null) return null;
        const length = new DataView(header.buffer).getUint32(0);
        if (length < 1 || length > MAX_FRAME) {
          throw new Error(`frame of ${length} bytes is over the ${MAX_FRAME}-byte limit`);
        }
        const payload = length > 1 ? readExact(length - 1) : new Uint8Array(0);
        if (payload === null) throw new Error("the channel closed in the middle of a frame");
        return [header[4], payload];
      },
      // A line (the per-run secret, sent before the handshake).
      read_line(limit) {
        const bytes = [];
        while (bytes.length < limit) {
          const b = readExact(1);
          if (b === null || b[0] === 10) break;
          bytes.push(b[0]);
        }
        return new Uint8Array(bytes);
      },
      write(data) {
        writeAll(data);
      },
      deadline_set(seconds) {
        lock();
        try {
          Atomics.store(words, FIRED, 0);
          Atomics.store(words, INTERRUPT, 0);
          Atomics.store(words, CELL, 1); // running
          deadline[0] = seconds === null || seconds === undefined ? 0 : Date.now() + seconds * 1000;
        } finally {
          unlock();
        }
      },
      // True once the running cell was cancelled by the host (SIGUSR1 to the main thread).
      cancelled() {
        const cell = Atomics.load(words, CELL);
        return cell === 2 || cell === 3;
      },
      // Clears the deadline and any interrupt not yet seen; true if the deadline had fired.
      deadline_clear() {
        lock();
        try {
          deadline[0] = 0;
          Atomics.store(words, INTERRUPT, 0);
          const cell = Atomics.load(words, CELL);
          Atomics.store(words, CELL, cell === 2 || cell === 3 ? 3 : 0); // ended (cancelled?)
          return Atomics.load(words, FIRED) === 1;
        } finally {
          unlock();
        }
      },
    });
    pyodide.FS.mkdirTree("/rlm/src");
    pyodide.FS.writeFile("/rlm/src/rlm_worker.py", Deno.readTextFileSync(workerPy));
    pyodide.FS.writeFile("/rlm/src/rlm_pyodide_bridge.py", Deno.readTextFileSync(bridgePy));
    code = pyodide.runPython(
      "import sys\nsys.path.insert(0, '/rlm/src')\nimport rlm_pyodide_bridge\n" +
        "rlm_pyodide_bridge.main()",
    );
  } catch (err) {
    console.error(`rlm pyodide worker: ${err && err.stack ? err.stack : err}`);
    code = 70;
  }
  self.postMessage({ exit: typeof code === "number" ? code : 0 });
};
