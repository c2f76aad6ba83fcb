"""Running DeepSeek-OCR with torch: the replica, checkpoint loading, preprocessing, prompts.

The torch-using parts sit apart from the architecture facts in ``dsocr.model`` (layers: README.md):
this package imports torch lazily and is used by ``capture`` and the CLI, never by
``analyze`` or ``report``.
"""
