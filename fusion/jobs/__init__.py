"""How a command runs: its device, its shards and executor (local or Ray), the merge of shard parts,
and the one-line errors a command ends with on bad input."""
