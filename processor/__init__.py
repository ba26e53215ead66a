"""The processor: keeps the group graph, every path's ACL and the labels, and judges exposures."""
