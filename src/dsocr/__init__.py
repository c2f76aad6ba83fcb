"""dsocr: an Nsight Systems profiler for the DeepSeek-OCR vision-language model."""

__version__ = "0.1.0"
