"""``python -m module`` for the tests, without a Python start-up and imports each time.

Each run is still a process of its own, as a user's is: its own environment, working
directory, standard streams and exit status. It is forked from a server process that
has imported the runtime (the console command, alembic) once: an interpreter with no
threads, so that forking it is safe, which never runs a command itself. A run that
outlives its timeout is killed, and raises :class:`subprocess.TimeoutExpired`.

One server serves one run at a time; runs from several threads at once get servers
of their own.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# What the server runs: read a request, fork, run the module in the child, answer.
SERVER = r"""
import json, os, runpy, signal, sys, traceback
import alembic.config, cnpg_trace_summaries.cli  # the runtime, imported once
# ... all but the console command's own module, which each run executes as __main__
del sys.modules["cnpg_trace_summaries.cli"], sys.modules["cnpg_trace_summaries"].cli

def run(request):
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                            (2, request["stderr"], os.O_WRONLY)):
        os.dup2(os.open(path, flags), fd)
    sys.stdin = open(0, closefd=False)
    sys.argv = [request["module"], *request["args"]]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as end:
        if end.code is None or isinstance(end.code, int):
            return end.code or 0
        print(end.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()

def expired(signum, frame):
    raise TimeoutError

signal.signal(signal.SIGALRM, expired)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = run(request)
        finally:
            os._exit(code)
    timed_out = False
    signal.setitimer(signal.ITIMER_REAL, request["timeout"])
    try:
        _, status = os.waitpid(pid, 0)
    except TimeoutError:
        timed_out = True
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}),
          flush=True)
"""


class _Server:
    def __init__(self, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )

    def run(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the fork server ended (exit status {self.process.wait()})")
        return json.loads(answer)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


_idle: list[_Server] = []
_all: list[_Server] = []
_lock = threading.Lock()


def _close_all() -> None:
    for server in _all:
        server.close()


atexit.register(_close_all)


def run_module(
    module: str, args: list[str], *, env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``cwd`` with exactly ``env``, its output captured."""
    with _lock:
        server = _idle.pop() if _idle else None
    if server is None:
        server = _Server(cwd)
        with _lock:
            _all.append(server)
    with tempfile.TemporaryDirectory(prefix="forkserver-") as scratch:
        out, err = Path(scratch, "stdout"), Path(scratch, "stderr")
        out.touch()
        err.touch()
        request = {"module": module, "args": list(args), "env": env, "cwd": str(cwd),
                   "stdout": str(out), "stderr": str(err), "timeout": timeout}  # fmt: skip
        answer = server.run(request)  # a server that fails here is not used again
        with _lock:
            _idle.append(server)
        stdout, stderr = out.read_text(), err.read_text()
    argv = [sys.executable, "-m", module, *args]
    if answer["timed_out"]:
        raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
    return subprocess.CompletedProcess(argv, answer["returncode"], stdout, stderr)
