"""ExecuTorch (.pte): exporter (`export`), runner (`runner`), record fields (`record`)."""
