"""Read-only tools: model summary, anchor statistics, the paper's numbers, one box painter."""
