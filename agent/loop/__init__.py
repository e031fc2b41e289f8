"""The zero-copy inference loop: buffers allocated once, sources that fill them in place."""
