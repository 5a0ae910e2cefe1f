"""Every benchmark, one after another: python -m bench.all (results in bench/results/)."""

from bench import cost_model, recovery, scaling, training

if __name__ == "__main__":
    import sys

    for module in (training, recovery, scaling, cost_model):
        print(f"\n== {module.__name__} ==", flush=True)
        sys.argv = [module.__name__]
        module.main()
