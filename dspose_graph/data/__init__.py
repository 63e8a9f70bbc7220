"""dspose_graph.data"""
