"""Optional integrations with training frameworks (Lightning, Hugging Face transformers)."""
