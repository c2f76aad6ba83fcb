"""Layer 2: DeepSeek-OCR architecture facts as data, modes, token counts; the replica (torch lazily)."""
