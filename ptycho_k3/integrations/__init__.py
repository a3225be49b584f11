"""Adapters that let other applications run ptycho-k3 (imported only on demand)."""
