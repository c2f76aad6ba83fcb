"""Layer 2: DeepSeek-OCR architecture facts as data, resolution modes, token counts; the replica (torch imported lazily)."""
