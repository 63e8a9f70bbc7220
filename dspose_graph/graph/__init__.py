"""dspose_graph.graph"""
