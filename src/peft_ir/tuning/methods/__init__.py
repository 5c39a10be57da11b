"""One module per PEFT method; each registers itself in `peft_ir.tuning.config.METHODS` on import."""
