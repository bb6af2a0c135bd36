"""``python -m amphora_agent``: the same as the ``amphora-agent`` command."""

from amphora_agent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
