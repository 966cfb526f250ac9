"""Entry point of the compiled `mycelium` binary (Nuitka): agent.cli.main."""
import sys

from agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
