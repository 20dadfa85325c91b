"""`python -m evo2lite ...` runs the command line, so torchrun can launch it: `torchrun --nproc-per-node N
-m evo2lite train CONFIG --context-parallel N`."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="evo2lite")
