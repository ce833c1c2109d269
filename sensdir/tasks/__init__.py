"""Tasks that direction types and studies share: the first-letter task and IOI prompts."""
