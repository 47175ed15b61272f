"""The extra seccomp filter the worker installs on itself inside the container.

Docker's own default profile stays in force; this filter stacks on top of it (the kernel applies
every installed filter, the strictest answer wins). It is compiled on the host with libseccomp
(``pyseccomp``), written into the run's control directory, and installed by :data:`BOOT_SCRIPT`
before the worker runs any model code.
"""

from __future__ import annotations

from rlm_isolation.seccomp import compile_program


def compile_filter(*, allow_subprocess: bool) -> bytes:
    """The BPF program (``struct sock_filter[]``) as bytes: the policy of
    :mod:`rlm_isolation.seccomp`, the same one the ``sandbox`` environment installs."""
    return compile_program(allow_subprocess=allow_subprocess)


# PID 1 of the container (stdlib + ctypes only). It forks the worker and stays as a minimal init:
# it ignores every signal model code can send it (Linux spares a namespace's init from signals
# it does not handle, gVisor does not), reaps orphans, and exits with the worker's status. The
# worker installs the seccomp filter on itself, then runs worker.py.
BOOT_SCRIPT = r'''
import ctypes, os, runpy, signal, sys
CTL = "/rlm/ctl"


def install_filter():
    path = os.path.join(CTL, "seccomp.bpf")
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        program = f.read()

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong,
                           ctypes.c_ulong]
    if libc.prctl(38, 1, None, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:
        sys.stderr.write("rlm docker boot: cannot install the seccomp filter: %s\n"
                         % os.strerror(ctypes.get_errno()))
        os._exit(96)


catchable = [s for s in signal.valid_signals()
             if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)]  # SIGCHLD: wait() works
for s in catchable:
    try:
        signal.signal(s, signal.SIG_IGN)
    except (OSError, ValueError):
        pass
child = os.fork()
if child == 0:
    for s in catchable:
        try:
            signal.signal(s, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it up
    install_filter()
    sys.argv = [os.path.join(CTL, "worker.py")] + sys.argv[1:]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    os._exit(0)
os.closerange(0, 3)  # the channel belongs to the worker alone
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        os._exit(1)
    except InterruptedError:
        continue
    if pid == child:
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
                 else 128 + os.WTERMSIG(status))
'''
