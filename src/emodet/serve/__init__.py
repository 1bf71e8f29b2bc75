"""The HTTP + WebSocket service and its page, on the torch-free runtime (``emodet serve``).

``from emodet.serve.app import create_app`` (needs ``pip install 'emodet[serve]'``: FastAPI, uvicorn,
python-multipart). Importing ``emodet.serve`` itself needs none of them, and nothing here imports torch.
"""

SERVE_INSTALL_HINT = "pip install 'emodet[serve]'"


def missing_dependencies() -> list[str]:
    """The packages ``emodet serve`` needs that are not installed (their pip names)."""
    import importlib.util

    wanted = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}
    return [pip for module, pip in wanted.items() if importlib.util.find_spec(module) is None]
