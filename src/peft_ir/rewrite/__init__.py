"""Query rewriting: RM3 (Lucene), vector PRF (dense), LLM rewriting at query time (query2doc, HyDE) and at
training time (CAR), with a reproducible, resumable cache of every generation."""
