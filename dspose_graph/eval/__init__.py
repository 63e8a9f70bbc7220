"""dspose_graph.eval"""
