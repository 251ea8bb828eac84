"""Planning: what a pipeline costs before it runs. FLOPs counted from the architecture (``flops``) and the cost model
with its crossover against one model per task (``costs``). No pyspark."""
