"""The browser viewer (viser): ``python -m gslrm.view ckpt_path=...`` and ``callbacks.viewer.enabled=true``."""
