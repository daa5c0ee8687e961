"""raftloop trainer: curated data to a better adapter (RAFT + LoRA), gated promotion."""
