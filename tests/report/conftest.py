from tests.pg import *  # noqa: F403
