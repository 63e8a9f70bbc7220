"""dspose_graph.graph: keypoint graphs, the paper's graph layer and the table of PyG convolutions."""
