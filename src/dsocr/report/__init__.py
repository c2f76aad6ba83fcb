"""Layer 5: one Report object rendered into Markdown, HTML, JSON and a results SQLite."""
