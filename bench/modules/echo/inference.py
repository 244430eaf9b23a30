"""Benchmark module: echo the input text back, so that only the serving path is measured."""

from typing import Any


def inference(
    parameters: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    output_fields: list[dict[str, Any]],
    model_key: str,
    model: Any = None,
) -> list[dict[str, Any]]:
    """Echo the text back.

    :param inputs.text: Text to echo
    :type inputs.text: str

    :param outputs.text: The same text
    :type outputs.text: str
    """
    return [{"text": record["text"]} for record in inputs]
