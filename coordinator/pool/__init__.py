"""Instances that know about each other: who each one is (identity env), the pool of what
each did (entries from its stream and its own ``pool`` blocks), the digest shared with the
others, file conflicts and their hook, worktrees."""
