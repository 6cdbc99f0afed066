"""Text-side data handling: conversation templates, image-aware tokenisation and a tiny test tokenizer."""
