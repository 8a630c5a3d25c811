"""The ``execution_error`` object as ComfyUI 0.33.0 sends it, bulk included.

Observed on a real server (realcomfy findings 3d): about 4 kB for a 64×64 image, because
``current_inputs`` holds a torch tensor repr for every tensor input and the hidden inputs of the
class (SaveImage: the whole graph as a Python repr, ``extra_pnginfo``), and ``traceback`` and
``exception_message`` carry server paths. The emulator sends the same kind of bulk, so clients are
tested against it: they must keep node id, class, exception type and the first line only.
"""

from __future__ import annotations

from typing import Any

from emulators.comfyui.catalog import hidden_inputs

__all__ = ["SERVER_ROOT", "current_inputs", "server_traceback", "tensor_repr"]

SERVER_ROOT = "/opt/ComfyUI"  # where the emulated server "lives" (paths in tracebacks)
_ROW = "[0.5020, 0.5020, 0.5020]"


def tensor_repr() -> str:
    """A torch-style repr of an image tensor, truncated as torch prints it (~1.4 kB)."""
    rows = f",\n          {_ROW}" * 2
    block = f"[{_ROW}{rows},\n          ...,\n          {_ROW}{rows}]"
    inner = f",\n\n         {block}" * 2
    return f"tensor([[{block}{inner},\n\n         ...,\n\n         {block}{inner}]])"


def current_inputs(class_type: str, inputs: dict[str, Any], graph: dict[str, Any],
                   extra_data: dict[str, Any]) -> dict[str, list[Any]]:
    """Every input as a one-element list: plain values as they are, anything else (tensors,
    models, latents) as a tensor repr, then the class's hidden inputs (the graph as a Python
    repr for PROMPT, the PNG info for EXTRA_PNGINFO)."""
    shown: dict[str, list[Any]] = {
        name: [value if value is None or isinstance(value, int | float | str | bool)
               else tensor_repr()]
        for name, value in inputs.items()
    }
    for name, kind in hidden_inputs(class_type).items():
        if kind == "PROMPT":
            shown[name] = [repr(graph)]
        elif kind == "EXTRA_PNGINFO":
            shown[name] = [extra_data.get("extra_pnginfo")]
    return shown


def server_traceback(class_type: str) -> list[str]:
    """Six frames of the server's stack with absolute server paths, like the real one."""
    frames = (
        ("execution.py", 496, "execute",
         "output_data, output_ui = await get_output_data(prompt_id, unique_id, obj, inputs)"),
        ("execution.py", 315, "get_output_data",
         "return_values = await _async_map_node_over_list(obj, inputs)"),
        ("execution.py", 289, "_async_map_node_over_list", "await process_inputs(input_dict, i)"),
        ("execution.py", 277, "process_inputs", "result = f(**inputs)"),
        ("nodes.py", 1615, class_type.lower(), f"return self.run({class_type!r}, **kwargs)"),
        ("comfy/utils.py", 88, "run", "raise error"),
    )
    return [f'  File "{SERVER_ROOT}/{path}", line {line}, in {func}\n    {code}\n'
            for path, line, func, code in frames]
