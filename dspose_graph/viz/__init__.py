"""dspose_graph.viz"""
