"""The policy being trained: loading it (`load`), sampling from it in process (`sample`) or on a generation
server (`server`, and `serve`, a small server for tests), its log-probabilities (`logps`) and LoRA
updates (`lora`)."""
