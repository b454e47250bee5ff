"""The model runner: SchedulerOutput -> tensors -> forward -> sampled tokens."""
