"""Exchange with other tools: export a checkpoint to a safetensors or ``torch.save`` file,
import ``.pt``/``.pth``/``.bin``/``.safetensors`` files and Hugging Face model folders.

``Store.export`` and ``Store.import_path`` are the entry points; this package keeps
the formats out of the store's core.
"""
