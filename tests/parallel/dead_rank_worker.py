"""One rank of the dead-peer test: context-parallel forwards of a tiny model in a loop, under the CLI's
error mapping (evo2lite.errors.cli_errors). Prints "step N" after each; the test kills rank 1."""

import sys

import torch


def main() -> None:
    from evo2lite.config import ModelConfig
    from evo2lite.model import StripedHyena2, init_weights_
    from evo2lite.parallel import apply_context_parallel, shard_sequence
    from evo2lite.parallel.dist import init_distributed, peer_failure_guard

    torch.set_num_threads(1)
    d, _ = init_distributed("cpu", context_parallel=2)
    model = init_weights_(StripedHyena2(ModelConfig(layout="SMLA", d_model=16, num_heads=2, d_mlp=16,
                                                    num_se_groups=2, num_mr_groups=2, mr_filter_len=8)))
    apply_context_parallel(model, d.cp_group)
    ids = shard_sequence(torch.randint(0, 256, (1, 64)), 2, d.cp_rank)
    for step in range(100000):
        with torch.no_grad(), peer_failure_guard(d.timeout_s):
            model(ids)
        print(f"step {step}", flush=True)


if __name__ == "__main__":
    import typer

    from evo2lite.errors import cli_errors

    sys.argv = sys.argv[:1]
    typer.run(cli_errors(main))
