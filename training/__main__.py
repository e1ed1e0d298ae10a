from training.cli import main

# Guarded: a process spawned by an import (training.store_process) imports this module again.
if __name__ == "__main__":
    main()
