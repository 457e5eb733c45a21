"""torch.compile's backend: in-process, never saved; a comparison point for verify and bench."""
