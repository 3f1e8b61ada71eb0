"""Call-and-compare grading inside a sandbox: the wire format, the untrusted callee and the trusted harness.

`rlaif_rewards.call_tests` runs this file's `callee` as the sandbox's commands' uid: it imports the submission
and answers calls to its entry point, one frame per call, reading calls from its stdin and writing answers to
its stdout. It never sees a test or an expected value. Who asks and who compares is trusted and out of reach:
- for `cases` tests (fixed arguments, an expected value each), the grader itself, in the rlaif process: it sends
  every call at once and compares the answers as they stream back;
- for `check` tests (HumanEval's `check(candidate)`, whose calls may depend on earlier answers), this file's
  `harness`, run by the sandbox executor as a paired exec under another uid: it gets the tests on its stdin
  (never from a file), runs them with `candidate` calling the callee through a pipe, and prints the verdict,
  which the executor collects. Helpers the tests need (`poly`, `encode_cyclic`...) come from the task's
  `helpers` source, never from the submission; the tests' `==` and `!=` are rewritten to `same` before they run.

Answers cross in a type-tagged binary encoding that the trusted side decodes into fresh builtins (`decode`:
no pickle, no marshal, nothing executable; bounded depth and sizes): None, bool, int, float, str, bytes, list,
tuple, dict, set. So nothing the submission made (an object whose `__eq__` always answers True, an int subclass)
ever reaches a comparison, and comparison is type-strict (`same`): a bool is not an int, a tuple not a list,
floats compare exactly unless the task gives a tolerance. What the trusted side sends the callee (calls, the
setup) is trusted data and travels as `marshal`.

The callee lowers its address-space limit before importing the submission (the submission cannot raise it
again) and bounds each call with a timer; those are its own, and a submission may defeat them, which costs it
only its own score: the grader's total timeout (and the harness's per-call deadline) still bounds it, and every
case not answered in time fails.

Standard library only, and quick to start (no json, no enum, no ast unless a `check` runs): it runs on the sandbox
image's python3, once per graded answer. The callee is started on this file's source above `CALLEE_END` only.
"""

from __future__ import annotations

import marshal
import math
import os
import select
import struct
import sys
import time

MAX_FRAME = 8 << 20
MAX_DEPTH = 64
MAX_HASHED = 4096
"""Entries of one decoded set or dict at most: ints hash predictably, so a submission could otherwise send a
set whose members all collide and make the trusted side's decoding quadratic."""
LEN = struct.Struct(">I")
FLOAT = struct.Struct(">d")
CALLEE_END = "# ---- the trusted side"
"""Where the callee's part of this file ends: it is started on the source above, a third less to compile."""
ENDING = ("unencodable", "timeout", "crashed", "malformed", "import_error")
"""Outcomes after which the callee is gone or cannot be trusted to go on: later cases are `not run`."""


class Unencodable(Exception):
    """A value of a type the encoding does not carry (subclasses of the plain types included)."""


class Malformed(Exception):
    """Bytes that are not the protocol."""


# ---- values ---------------------------------------------------------------------------------------------
def encode(value: object, depth: int = 0) -> bytes:
    kind = type(value)
    if value is None:
        return b"N"
    if kind is bool:
        return b"T" if value else b"F"
    if kind is int:
        text = format(value, "x").encode()  # hex: exact at any size, and linear to parse back
        return b"I" + LEN.pack(len(text)) + text
    if kind is float:
        return b"D" + FLOAT.pack(value)
    if kind is str or kind is bytes:
        data = value.encode("utf-8", "surrogatepass") if kind is str else value
        return (b"S" if kind is str else b"Y") + LEN.pack(len(data)) + data
    if depth >= MAX_DEPTH:
        raise Unencodable(f"a value nested deeper than {MAX_DEPTH}")
    if kind is list or kind is tuple or kind is set:
        return {list: b"L", tuple: b"U", set: b"E"}[kind] + LEN.pack(len(value)) + \
            b"".join(encode(v, depth + 1) for v in value)
    if kind is dict:
        return b"M" + LEN.pack(len(value)) + b"".join(encode(k, depth + 1) + encode(v, depth + 1)
                                                     for k, v in value.items())
    raise Unencodable(f"a {kind.__module__}.{kind.__qualname__}")


def decode(data: bytes) -> object:
    """The value `data` encodes, built from builtins only. `Malformed` for anything else, trailing bytes included."""
    value, end = _decode(memoryview(data), 0, 0)
    if end != len(data):
        raise Malformed("bytes after the value")
    return value


def _decode(data: memoryview, at: int, depth: int) -> tuple[object, int]:
    if depth > MAX_DEPTH or at >= len(data):
        raise Malformed("nested too deep" if depth > MAX_DEPTH else "a value cut short")
    tag, at = bytes(data[at:at + 1]), at + 1
    if tag in (b"N", b"T", b"F"):
        return {b"N": None, b"T": True, b"F": False}[tag], at
    if tag == b"D":
        if at + 8 > len(data):
            raise Malformed("a float cut short")
        return FLOAT.unpack_from(data, at)[0], at + 8
    if at + 4 > len(data):
        raise Malformed("a length cut short")
    (n,), at = LEN.unpack_from(data, at), at + 4
    if tag in (b"I", b"S", b"Y"):
        if at + n > len(data):
            raise Malformed("a value cut short")
        raw, at = bytes(data[at:at + n]), at + n
        try:
            return (int(raw.decode("ascii"), 16) if tag == b"I" else raw.decode("utf-8", "surrogatepass")
                    if tag == b"S" else raw), at
        except (ValueError, UnicodeDecodeError):
            raise Malformed(f"a bad {'int' if tag == b'I' else 'str'}") from None
    if tag not in (b"L", b"U", b"E", b"M") or n > len(data) - at:  # every item takes at least one byte
        raise Malformed(f"unknown tag {tag!r}" if tag not in (b"L", b"U", b"E", b"M") else "a bad length")
    if tag in (b"E", b"M") and n > MAX_HASHED:
        raise Malformed(f"a set or dict of {n} entries (at most {MAX_HASHED})")
    items = []
    for _ in range(n * 2 if tag == b"M" else n):
        item, at = _decode(data, at, depth + 1)
        items.append(item)
    try:
        if tag == b"M":
            return dict(zip(items[::2], items[1::2], strict=True)), at
        return (items if tag == b"L" else tuple(items) if tag == b"U" else set(items)), at
    except TypeError:
        raise Malformed("an unhashable dict key or set member") from None


def same(a: object, b: object, rel: float = 0.0, abs_: float = 0.0) -> bool:
    """Type-strict equality: same types all the way down (True is not 1, (1,) is not [1]); floats exactly
    (NaN equals NaN), or within `rel`/`abs_` when the task gives a tolerance."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if a != a and b != b:
            return True
        return a == b or bool((rel or abs_) and math.isclose(a, b, rel_tol=rel, abs_tol=abs_))
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y, rel, abs_) for x, y in zip(a, b, strict=True))
    if type(a) in (dict, set):
        if len(a) != len(b):
            return False
        keys = {k: k for k in b}  # b's own key objects, to compare their types too
        if any(k not in keys or not same(k, keys[k]) for k in a):
            return False
        return type(a) is set or all(same(a[k], b[keys[k]], rel, abs_) for k in a)
    return a == b


# ---- frames ---------------------------------------------------------------------------------------------
def send(fd: int, payload: bytes) -> None:
    payload = LEN.pack(len(payload)) + payload
    while payload:
        payload = payload[os.write(fd, payload):]


def receive(fd: int, deadline: float | None = None) -> bytes:
    """One frame's payload. `TimeoutError` past the deadline, `EOFError` when the other side is gone."""
    (size,) = LEN.unpack(_read(fd, 4, deadline))
    if size > MAX_FRAME:
        raise Malformed(f"a frame of {size} bytes (at most {MAX_FRAME})")
    return _read(fd, size, deadline)


def _read(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, left = [], n
    while left:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def reply(payload: bytes) -> tuple[str, object]:
    """A callee's answer as (kind, value): `value` (decoded), `raised`, `timeout`, `unencodable`, `import_error`,
    `ready`. `Malformed` for anything else."""
    kinds = {b"v": "value", b"r": "raised", b"t": "timeout", b"u": "unencodable", b"i": "import_error", b"k": "ready"}
    kind = kinds.get(payload[:1])
    if kind is None:
        raise Malformed("an answer of an unknown kind")
    if kind == "value":
        return kind, decode(payload[1:])
    return kind, payload[1:501].decode("utf-8", "replace")


# ---- the untrusted side ---------------------------------------------------------------------------------
def callee() -> None:
    """Write the submission's files, import it, answer calls to its entry point until stdin closes. Runs as the
    commands' uid, started with `-S`: site-packages only when the setup asks for them."""
    import _signal as signal  # the C module: `signal` imports enum, a third of this process's start-up
    import resource

    read_fd, write_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # the submission's prints must not reach the channel
        os.dup2(null, fd)
    setup = marshal.loads(receive(read_fd))
    for name, text in setup.get("files", {}).items():
        with open(os.path.basename(name), "wb") as f:
            f.write(text)
    if setup.get("site"):
        import site

        site.main()
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    memory = setup.get("memory_mb", 256) << 20
    memory = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))  # soft and hard: the submission cannot raise it
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)
    sys.path.insert(0, os.getcwd())
    limit = float(setup.get("call_timeout_s", 5.0))

    def too_slow(*_: object) -> None:
        raise TimeoutError(f"the call ran past {limit:g} s")

    signal.signal(signal.SIGALRM, too_slow)
    try:
        signal.setitimer(signal.ITIMER_REAL, limit)
        function = getattr(__import__(setup["module"]), setup["entry_point"])
        signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as err:  # SystemExit and KeyboardInterrupt at import are answers too
        send(write_fd, b"i" + f"{type(err).__name__}: {err}"[:500].encode("utf-8", "replace"))
        return
    send(write_fd, b"k")
    while True:
        try:
            args, kwargs = marshal.loads(receive(read_fd))
        except EOFError:
            return
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            result = function(*args, **kwargs)
            signal.setitimer(signal.ITIMER_REAL, 0)
            answer = b"v" + encode(result)
        except Unencodable as err:
            answer = b"u" + f"it returned {err}".encode()
        except BaseException as err:  # an exception raised by the submission is its answer
            signal.setitimer(signal.ITIMER_REAL, 0)
            kind = b"t" if isinstance(err, TimeoutError) else b"r"  # the timer fired, or the submission raised
            answer = kind + f"{type(err).__name__}: {err}"[:500].encode("utf-8", "replace")
        send(write_fd, answer)
        if answer[:1] == b"t":  # its state after an interrupted call is nobody's guess: answer no more
            return


# ---- the trusted side of `check` tests (the callee's source ends above this line: CALLEE_END) -----------
class CalleeGone(BaseException):
    """The callee can answer no more (an ending outcome); a BaseException, so that a test cannot swallow it."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


class CalleeRaised(Exception):
    """The submission raised: a wrong answer (which a test may even expect)."""


class TaskError(Exception):
    """The task's own test passed the submission something the channel cannot carry."""


class Channel:
    """The harness's end of the pipe to the callee."""

    def __init__(self, read_fd: int, write_fd: int, timeout_s: float) -> None:
        self.read_fd, self.write_fd, self.timeout_s, self.calls = read_fd, write_fd, timeout_s, 0

    def request(self, message: object, timeout_s: float) -> tuple[str, object]:
        try:
            send(self.write_fd, marshal.dumps(message, 4))
            return reply(receive(self.read_fd, time.monotonic() + timeout_s))
        except TimeoutError:
            raise CalleeGone("timeout", f"no answer within {timeout_s:g} s") from None
        except (EOFError, BrokenPipeError):
            raise CalleeGone("crashed", "the submission's process exited or closed the channel") from None
        except Malformed as err:
            raise CalleeGone("malformed", str(err)) from None

    def call(self, *args: object, **kwargs: object) -> object:
        try:
            encode(args)
            encode(kwargs)
        except Unencodable as err:
            raise TaskError(f"a test passed {err} to the submission") from None
        self.calls += 1
        kind, value = self.request((args, kwargs), self.timeout_s + 1.0)
        if kind == "value":
            return value
        if kind == "raised":
            raise CalleeRaised(value)
        raise CalleeGone(kind if kind in ("unencodable", "timeout") else "malformed", str(value))


def strict_tree(source: str) -> object:
    """The parsed test with `x == y` -> `__same__(x, y)` and `x != y` -> `not __same__(x, y)` (single
    comparisons only), ready to compile."""
    import ast  # here, not at the top: only `check` tests pay for it

    class Strict(ast.NodeTransformer):
        def visit_Compare(self, node: ast.Compare) -> ast.AST:
            self.generic_visit(node)
            if len(node.ops) != 1 or not isinstance(node.ops[0], ast.Eq | ast.NotEq):
                return node
            call = ast.Call(ast.Name("__same__", ast.Load()), [node.left, node.comparators[0]], [])
            return call if isinstance(node.ops[0], ast.Eq) else ast.UnaryOp(ast.Not(), call)

    return ast.fix_missing_locations(Strict().visit(ast.parse(source)))


def run_check(spec: dict, channel: Channel) -> str:
    """The outcome of the task's `check(candidate)` with `candidate` calling the submission, and its detail."""
    namespace: dict = {"__name__": "__check__", "__same__": same}
    exec(compile(spec.get("helpers", ""), "<task helpers>", "exec"), namespace)  # trusted: the task's own
    namespace[spec["entry_point"]] = channel.call  # a test may name the function too (HumanEval/33 does)
    exec(compile(strict_tree(spec["check"]), "<task check>", "exec"), namespace)
    try:
        kind, value = channel.request({k: spec[k] for k in ("module", "entry_point", "memory_mb", "files", "site",
                                                            "call_timeout_s") if k in spec},
                                      float(spec.get("import_timeout_s", 10.0)))
        if kind == "import_error":
            return "import_error", str(value)
        if kind != "ready":
            return "malformed", "a first answer other than ready"
        namespace["check"](channel.call)
    except CalleeGone as gone:
        return gone.outcome, gone.detail
    except CalleeRaised as err:
        return "raised", str(err)
    except TaskError:
        raise
    except Exception as err:  # a failed assertion, or the test tripping over a wrong value
        return "failed", f"{type(err).__name__}: {err}"[:300]
    return "passed", ""


def harness() -> None:
    """Run the `check` spec on stdin (marshal) against the callee; print the verdict (marshal). Grader uid."""
    spec = marshal.loads(sys.stdin.buffer.read())
    read_fd, write_fd = (int(fd) for fd in os.environ["RLAIF_CHANNEL"].split(","))
    channel = Channel(read_fd, write_fd, float(spec.get("call_timeout_s", 5.0)))
    try:
        outcome, detail = run_check(spec, channel)
        verdict = {"outcomes": [{"outcome": outcome, "detail": detail}], "calls": channel.calls}
    except TaskError as err:
        verdict = {"task_error": str(err)}
    sys.stdout.buffer.write(marshal.dumps(verdict, 4))


if __name__ == "__main__":
    {"harness": harness, "callee": callee}[sys.argv[1]]()
