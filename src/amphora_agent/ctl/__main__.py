"""``python -m amphora_agent.ctl``: the same as ``amphoractl``."""

from amphora_agent.ctl import main

main()
