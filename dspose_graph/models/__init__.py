"""dspose_graph.models"""
