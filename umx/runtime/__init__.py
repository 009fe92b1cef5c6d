"""The runtime: from the arrays asked for to results. The scheduler plans evaluations onto per-stream executors,
fusion turns elementwise regions into single tasks, executors run tasks on their streams' workers, and memory
keeps each array's data and copies, with the counts and limits of every location."""
