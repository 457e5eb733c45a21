"""After the bench table: choose the artifact to ship (`select`) and hand it to a server
(`triton`)."""
