"""dspose_graph.train"""
