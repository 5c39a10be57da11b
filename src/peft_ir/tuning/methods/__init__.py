"""One module per PEFT method; each registers itself in `peft_ir.tuning.registry.METHODS` on import."""
