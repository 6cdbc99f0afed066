"""Training data: LLaVA-format records, the row index over JSONL/Parquet, the dataset and collator, validation."""
