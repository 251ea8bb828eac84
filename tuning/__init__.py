"""Multi-task fine-tuning of the shared encoder (Du et al. 2020): recipe config, task data, sampling, losses, the
network (whose forward pass is the extractor's, ``encoder.forward``), the loop in named steps, distillation and the
distributed run. Plain torch: no pyspark; imports ``encoder/`` and ``heads/``, neither of which imports it.

Multi-task fine-tuning of the shared encoder (Du et al. 2020): one transformer, the spec's feature extraction, one
head per task, trained jointly so that frozen features (and their sign bits) serve tasks the encoder never saw.

The recipe, and where it comes from:
- **Heterogeneous steps**: every step draws ``texts_per_step`` examples, each from a task drawn with probability
  proportional to ``n_task ** (1 / temperature)`` (T=1: proportional to size, MT-DNN's sampling; large T: uniform).
  Muppet found mixing tasks within a step more stable than one task per step. Within a task, rows are visited in a
  seeded shuffled order and reshuffled when exhausted, so a small task is revisited and a large one not repeated.
- **Loss scaling**: a task's loss is divided by log(number of classes) (Muppet), so a 20-way task does not outweigh a
  binary one merely because its cross-entropy starts higher. Multi-label tasks are per-label binary losses (log 2).
- **Binary-aware training** (``binary: ste``): heads see the pooled features through the same quantization the table
  stores (x > threshold -> +1, else -1), with a straight-through gradient (the identity on the unit-RMS features), so
  the encoder learns to put its information into the bits. ``ste_mixed`` also trains the heads on the float path.
- **Bit margin** (``bit_margin``, off by default): weights mean_d (|x_d - t_d| - 1)^2 on the unit-RMS features x
  (t: the thresholds), the quantization loss of deep hashing (Li et al. 2016, DPSH): every dimension is pushed away
  from its threshold, on every text, so the sign keeps more of the feature for tasks no head was trained on.
- **Keeping the encoder general**: ``keep_general`` weights a term 1 - cos(features, base encoder's features on the
  same texts), so similarity and unseen tasks keep what the base model knew.
- Early stopping on the tuning tasks' validation splits (mean of per-task accuracy / micro-F1, each through the path
  the heads use), a token budget per micro-batch with gradient accumulation (memory is bounded whatever the text
  lengths), warm-up then linear decay, fp16/bf16 autocast on GPU. Deterministic on CPU for a seed and thread count.
- Data parallel (``world`` > 1, e.g. under Spark's TorchDistributor): every rank draws the same step, encodes its
  slice of it, and gradients are summed across ranks before the step, so a step's gradient is the one process's
  (up to float rounding and each rank's own dropout masks); rank 0's validation figures decide early stopping.
"""
