"""Measuring each instance: quality from its verify command, its time budget, the memory of
its process tree, what each tool cost, and a bounded series for charts. The rules here are
pure; the engine samples and the verify adapter (runner/verify.py) runs the command."""
