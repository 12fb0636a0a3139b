"""``python -m reluflow``: the command line (see ``reluflow.cli``)."""

# The guard matters: dask starts local workers with ``spawn``, which re-imports this module in each worker.
if __name__ == "__main__":
    from .cli import main

    raise SystemExit(main())
