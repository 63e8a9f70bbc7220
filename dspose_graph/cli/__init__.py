"""The `dspose` command: one module per sub-command, each an argparse shell over library functions
(configs are parsed by `dspose_graph.train.config`)."""
