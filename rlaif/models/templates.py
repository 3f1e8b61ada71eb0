"""Chat templates that render tools, and setting one on a model directory.

A model's own template may ignore `tools=` (SmolLM2's does): the prompt then never shows the model its tools,
and an agent trained on it learns nothing about them. `rlaif model template DIR NAME|FILE` replaces the template
with one that renders them. The built-in ones are ChatML with Hermes-style tools (the Qwen2.5 convention): tool
definitions in the system turn, calls as `<tool_call>{json}</tool_call>` in the assistant turn, results in a
`tool` turn, which is what `rlaif.rollout.toolcalls.parse_hermes` reads back. Their `{% generation %}` markers
let SFT train on assistant tokens only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from rlaif.errors import RlaifError

SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml_tools(default_system: str | None = None) -> str:
    """ChatML with Hermes-style tools; `default_system`: the system turn of a conversation that has none."""
    default = "" if default_system is None else json.dumps(default_system)
    with_default = f"{{%- elif true %}}{{{{- {default} + '\\n\\n' }}}}" if default else ""
    alone = f"{{%- else %}}{{{{- '<|im_start|>system\\n' + {default} + '<|im_end|>\\n' }}}}" if default else ""
    return (
        "{%- if tools %}"
        "{{- '<|im_start|>system\\n' }}"
        "{%- if messages and messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}"
        f"{with_default}{{%- endif %}}"
        "{{- '# Tools\\n\\nYou may call functions. Their signatures are inside <tools></tools>:\\n<tools>' }}"
        "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
        "{{- '\\n</tools>\\n\\nTo call a function, reply with a JSON object inside <tool_call></tool_call> tags:"
        "\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call>"
        "<|im_end|>\\n' }}"
        "{%- elif messages and messages[0].role == 'system' %}"
        "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
        f"{alone}"
        "{%- endif %}"
        "{%- for message in messages %}"
        "{%- if message.role == 'system' and not loop.first %}"
        "{{- '<|im_start|>system\\n' + message.content + '<|im_end|>\\n' }}"
        "{%- elif message.role == 'user' %}"
        "{{- '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' }}"
        "{%- elif message.role == 'assistant' %}"
        "{{- '<|im_start|>assistant\\n' }}"
        "{%- generation %}"
        "{{- message.content or '' }}"
        "{%- for call in message.tool_calls or [] %}"
        "{%- set fn = call.function if call.function is defined else call %}"
        "{{- '\\n<tool_call>\\n{\"name\": \"' + fn.name + '\", \"arguments\": ' }}"
        "{{- fn.arguments if fn.arguments is string else (fn.arguments | tojson) }}"
        "{{- '}\\n</tool_call>' }}"
        "{%- endfor %}"
        "{{- '<|im_end|>' }}"
        "{%- endgeneration %}"
        "{{- '\\n' }}"
        "{%- elif message.role == 'tool' %}"
        "{{- '<|im_start|>tool\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
        "{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )


TEMPLATES = {"chatml-tools": chatml_tools(), "smollm2-tools": chatml_tools(SMOLLM2_SYSTEM)}
"""Built-in templates by name: plain ChatML, and ChatML with SmolLM2's default system turn."""


def set_chat_template(model_dir: str | Path, template: str) -> Path:
    """Make `template` (a name in TEMPLATES or a .jinja file) the chat template of `model_dir`; returns the file.

    It goes to chat_template.jinja, written whole or not at all; a `chat_template` in tokenizer_config.json, which
    would compete with it, is removed. The template must render the tool probe (`rlaif model check`'s): the tools
    and a call's result."""
    from rlaif.models.modeldir import TOOL_PROBE, TOOL_SPEC, chat_tokenizer, renders_tools

    tokenizer = chat_tokenizer(model_dir)
    if template in TEMPLATES:
        text = TEMPLATES[template]
    elif Path(template).is_file():
        text = Path(template).read_text()
    else:
        raise RlaifError(f"chat template {template} is neither a file nor one of: {', '.join(TEMPLATES)}")
    tokenizer.chat_template = text
    try:
        rendered = tokenizer.apply_chat_template(TOOL_PROBE, tools=TOOL_SPEC, tokenize=False,
                                                 add_generation_prompt=True)
    except Exception as err:  # jinja raises TemplateError, and a template's own `raise_exception` anything
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise RlaifError(f"chat template {template} does not render ({first}); {model_dir} is unchanged") from None
    if not renders_tools(rendered):
        raise RlaifError(f"chat template {template} does not render tools and tool results; {model_dir} is unchanged")
    target = Path(model_dir) / "chat_template.jinja"
    _write(target, text)
    config_path = Path(model_dir) / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if "chat_template" in config:
        del config["chat_template"]
        _write(config_path, json.dumps(config, indent=2) + "\n")
    return target


def _write(path: Path, text: str) -> None:
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(staging, 0o644)
    os.replace(staging, path)
