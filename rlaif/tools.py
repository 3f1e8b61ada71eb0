"""Ready-made sandbox tools for environments: `bash`, `read_file`, `write_file`, `submit`.

An environment offers them with `SANDBOX_TOOLS` (or a subset) and runs a call with `run_sandbox_tool`.
Paths are relative to the work directory; a path that leaves it is refused. Outputs shown to the model
are cut to `max_chars` (the full output is never needed by the model; the sandbox caps it anyway).
Every mistake (unknown tool, missing argument, bad path) is an `error` result the model sees.
"""

from __future__ import annotations

import posixpath

from rlaif.env import ToolOutput, ToolSpec
from rlaif.sandbox.base import WORK, Sandbox, SandboxError
from rlaif.types import ToolCall

SANDBOX_TOOLS = [
    ToolSpec(name="bash", description="Run a shell command in the repository (cwd is the work directory).",
             parameters={"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
    ToolSpec(name="read_file", description="Read a file, by path relative to the repository root.",
             parameters={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
    ToolSpec(name="write_file", description="Create or overwrite a file with the given content.",
             parameters={"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                         "required": ["path", "content"]}),
    ToolSpec(name="submit", description="Finish: the repository as it is now is your answer.",
             parameters={"type": "object", "properties": {}}),
]


def work_path(path: str) -> str | None:
    """The path relative to the work directory, or None when it points outside it."""
    full = posixpath.normpath(posixpath.join(WORK, path))
    if full != WORK and not full.startswith(WORK + "/"):
        return None
    return posixpath.relpath(full, WORK)


async def run_sandbox_tool(sandbox: Sandbox, call: ToolCall, timeout_s: float = 30.0,
                           max_chars: int = 8000) -> ToolOutput:
    """Run one of the SANDBOX_TOOLS. Sandbox infrastructure failures come back with status `infra_error`."""
    args = call.arguments
    if call.name == "submit":
        return ToolOutput(output="submitted", done=True)
    required = next((t.parameters.get("required", []) for t in SANDBOX_TOOLS if t.name == call.name), None)
    if required is None:
        return ToolOutput(output=f"error: unknown tool {call.name!r}; tools: bash, read_file, write_file, submit",
                          status="error")
    missing = [k for k in required if not isinstance(args.get(k), str)]
    if missing:
        return ToolOutput(output=f"error: {call.name} needs string argument(s) {', '.join(missing)}", status="error")
    try:
        if call.name == "bash":
            result = await sandbox.exec(args["command"], timeout=timeout_s)
            if result.status == "infra_error":
                return ToolOutput(output=result.error or "sandbox failed", status="infra_error")
            text = result.stdout + result.stderr
            note = {"ok": "", "nonzero_exit": f"[exit code {result.exit_code}]", "timeout": f"[timed out after "
                    f"{timeout_s:.0f} s]", "oom": "[killed: out of memory]", "output_truncated": "[output cut]"}
            return ToolOutput(output=_cut(text, max_chars) + note[result.status], status=result.status)
        path = work_path(args["path"])
        if path is None:
            return ToolOutput(output=f"error: {args['path']} is outside the repository", status="error")
        if call.name == "read_file":
            content = await sandbox.read_file(f"{WORK}/{path}")
            return ToolOutput(output=_cut(content.decode(errors="replace"), max_chars))
        await sandbox.write_files({path: args["content"]})
        return ToolOutput(output=f"wrote {len(args['content'])} characters to {path}")
    except SandboxError as err:
        if sandbox.dead or not await sandbox.alive():
            return ToolOutput(output=str(err), status="infra_error")
        return ToolOutput(output=f"error: {err}", status="error")


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[: max_chars // 2] + f"\n... [{len(text) - max_chars} characters cut] ...\n" + text[-max_chars // 2:]
